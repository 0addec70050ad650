"""The embedded benchmark: a seeded world of simple shapes with a grammar for its language.

Modules, one job each: ``config`` (settings), ``vocab`` (lexicon), ``render`` (drawing), ``scene`` (object
sampling and placement), ``language`` (texts), ``resolver`` (reads texts back), ``species`` (CUB classes),
``suite`` (builds and saves every set), ``card`` (statistics and sample figures).

Typical use::

    from vlrepro.data.world import WorldConfig, build_suite
    build_suite(WorldConfig(), Path("data/world"))

Names are imported lazily so that ``vlrepro.config`` can read ``WorldConfig`` without loading the drawing
code (scikit-image) or pandas/matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WorldConfig": "config",
    "SETS": "suite",
    "build_suite": "suite",
    "build_split": "suite",
    "split_size": "suite",
    "image_rng": "suite",
    "resolve": "resolver",
    "parse": "resolver",
    "suite_statistics": "card",
    "plot_samples": "card",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
