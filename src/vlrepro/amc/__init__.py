"""AMC (attention mask consistency, CVPR 2023) on an ALBEF-style model: ``python -m vlrepro.amc --variant V --seed S``.

Modules: ``config`` (the ``amc`` params section), ``model`` (ALBEF: ViT, BERT text + fusion layers with
cross-attention, ITC/ITM/MLM heads), ``data`` (region descriptions with box masks, grounding evaluation
sets and their controls), ``run`` (losses, training, pointing game, learning-gate controls and ITM
accuracy, metrics). Kept import-light: ``vlrepro.config`` imports ``amc.config`` (its ``Params``) to validate
the ``amc`` section of params.yaml.
"""
