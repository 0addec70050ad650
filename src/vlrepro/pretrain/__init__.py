"""The ``pretrain`` stage: world-pretrained weights standing in for ImageNet, COCO, CLIP and BERT.

Modules, one job each: ``config`` (the params section), ``data`` (world images, scene graphs, texts),
``attributes`` (vision backbones: dense + scene attribute labels), ``mlm`` (text encoder), ``contrastive``
(CLIP-style dual encoder), ``downstream`` (minimal REC model from both initialisations), ``run`` (one call
per model, for the notebook). Checkpoints are read back with ``vlrepro.models.load_pretrained``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PretrainParams": "config",
    "Pretrained": "run",
    "pretrain_text": "run",
    "pretrain_backbone": "run",
    "pretrain_clip": "run",
    "downstream_curve": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: vlrepro.config imports PretrainParams and must not pull in torch, timm or transformers.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
