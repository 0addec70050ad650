"""vlrepro: a reproducibility study of visual grounding and explanation methods."""

__version__ = "0.1.0"
