"""CLIP's symmetric InfoNCE loss and its learnable temperature.

For L2-normalised image and text embeddings ``I, T`` (B, D) of B matching pairs and a scale ``s = 1/τ``,
``logits = s · I Tᵀ``; the loss is the mean of the image→text and text→image cross-entropies with the
diagonal as targets. The temperature is a model parameter (``LogitScale``), learned as ``log s`` and
clamped so that ``s ≤ max_scale`` (CLIP: 100), which keeps the softmax from saturating early.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LogitScale(nn.Module):
    """``forward() -> s = exp(log_s)``, learnable, initialised at ``1 / init_temperature``, at most ``max_scale``."""

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        if init_temperature <= 0 or 1 / init_temperature > max_scale:
            raise ValueError(f"init_temperature {init_temperature} must be > 0 with 1/τ <= max_scale {max_scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log = math.log(max_scale)

    def forward(self) -> Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()


def info_nce(
    image_emb: Tensor,
    text_emb: Tensor,
    scale: Tensor | float,
    image_ids: Tensor | None = None,
    negative_emb: Tensor | None = None,
    has_negative: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE of ``B`` matching (image, text) pairs; embeddings are expected L2-normalised.

    With ``image_ids`` (B,), an off-diagonal pair of the same image is left out of both softmaxes: that
    text describes the image too and must not be pushed away from it. With ``negative_emb`` (B, D), image
    ``i``'s own hard negative text ``negative_emb[i]`` joins image ``i``'s image->text softmax as one more
    column, where ``has_negative[i]`` (default: every row has one).
    """
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(f"expected two (B, D) embeddings, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    logits = scale * image_emb @ text_emb.t()
    if image_ids is not None:
        same = image_ids.unsqueeze(0) == image_ids.unsqueeze(1)
        logits = logits.masked_fill(same & ~torch.eye(len(same), dtype=torch.bool, device=same.device), float("-inf"))
    targets = torch.arange(len(logits), device=logits.device)
    t2i = F.cross_entropy(logits.t(), targets)
    if negative_emb is not None:
        if negative_emb.shape != image_emb.shape:
            raise ValueError(f"negative_emb {tuple(negative_emb.shape)}: expected one per image, "
                             f"{tuple(image_emb.shape)}")
        own = scale * (image_emb * negative_emb).sum(1)
        if has_negative is not None:
            own = own.masked_fill(~has_negative, float("-inf"))
        logits = torch.cat([logits, own.unsqueeze(1)], dim=1)
    return (F.cross_entropy(logits, targets) + t2i) / 2
