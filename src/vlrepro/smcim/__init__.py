"""SMCIM reproduction (Miao et al., "Self-paced Multi-grained Cross-modal Interaction Modeling for REC").

- ``config``: the ``smcim`` params section and its ablation variants;
- ``augment``: flip (left/right swapped in the text), affine, colour jitter, blur;
- ``features``: the frozen encoders' outputs, computed once (stage ``smcim_features``);
- ``run``: one variant × seed, trained and evaluated on those features (stage ``smcim@<variant>-<seed>``);
- ``online``: the end-to-end path (encoders fine-tuned); ``real``: the real RefCOCO/+/g (``source: real``);
- ``efficiency``: parameters, FLOPs and batch-1 latency of SMCIM and the TransVG-style baseline.

The models (SMCIM, TransVG-style) are in ``model``, the losses in ``vlrepro.losses.self_paced`` / ``.boxes``.
"""
