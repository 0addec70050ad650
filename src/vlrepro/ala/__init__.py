"""ALA (Hirano et al.): an Attention Lattice Adapter that explains a frozen CLIP image encoder.

``config`` (the ``ala`` params section), ``model`` (SBN, attention and perception branches, AEA), ``run``
(one variant x seed, the post-hoc baselines, the explanation scores), ``__main__`` (the stages' command,
claims and gates). Method, deviations and claims: docs/papers/ala.md.
"""
