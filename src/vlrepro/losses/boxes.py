"""Per-sample box regression losses on normalised ``(cx, cy, w, h)`` boxes (SMCIM, TransVG).

Per sample, not reduced: the self-paced loss weighs each sample by its own difficulty. Written here rather
than taken from torchvision (the tests compare against ``torchvision.ops``) so that a training process on
cached features does not pay torchvision's import time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlrepro.metrics.boxes import cxcywh_to_xyxy


def l1_per_sample(pred: Tensor, target: Tensor) -> Tensor:
    """``|x−x̂| + |y−ŷ| + |w−ŵ| + |h−ĥ|`` per row of (N, 4) boxes."""
    return (pred - target).abs().sum(-1)


def giou_loss_per_sample(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 − IoU + |C \\ (A∪B)| / |C|`` per row of (N, 4) cxcywh boxes, C the smallest box enclosing both."""
    a, b = cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area(a) + area(b) - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return 1 - inter / (union + eps) + (hull - union) / (hull + eps)
