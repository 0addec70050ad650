"""GLIP's token-level sigmoid focal loss over the alignment logits of regions × tokens."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def token_focal_loss(
    logits: Tensor, targets: Tensor, token_mask: Tensor, num_positive: float, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss (Lin et al.) summed over regions × real tokens, divided by ``num_positive``.

    ``logits``/``targets`` (B, N, L): alignment scores and the binary map (a region is positive for every
    sub-word token of its phrase); ``token_mask`` (B, L) True at real prompt tokens, padding contributes
    nothing; ``num_positive``: positive regions in the batch (GLIP normalises by these, at least 1).
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return (loss * token_mask[:, None, :]).sum() / max(float(num_positive), 1.0)
