"""AMC's attention-mask-consistency loss on a GradCAM heatmap (Yang, Ordonez et al., CVPR 2023).

For heatmaps ``A`` (B, H, W), min-max normalised per sample, and box masks ``M`` (B, H, W) in {0, 1}:

- ``L_mean = max(0, mean_outside(A) - mean_inside(A) + Δ1)`` with the means taken over the whole batch
  (the reference sums ``A·M`` and ``M`` over every sample before dividing), so one hinge per batch;
- ``L_max = mean_b max(0, max_outside(A_b) - max_inside(A_b) + Δ2)``, one hinge per sample;
- ``L_amc = λ1·L_mean + λ2·L_max`` (card: Δ1 = 0.1, Δ2 = 0.5, λ1 = 0.2, λ2 = 0.8).

Inside/outside maxima use ``A`` with the other region's pixels set to 0 (A ≥ 0 after normalisation), so a
sample whose mask covers every pixel (or none) contributes a well-defined value instead of ``-inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AMCWeights:
    delta1: float = 0.1  # margin of L_mean
    delta2: float = 0.5  # margin of L_max
    lambda1: float = 0.2  # weight of L_mean
    lambda2: float = 0.8  # weight of L_max


def _check(heat: Tensor, masks: Tensor) -> None:
    if heat.dim() != 3 or heat.shape != masks.shape:
        raise ValueError(f"expected heatmaps and masks of the same (B, H, W) shape, got {tuple(heat.shape)} "
                         f"and {tuple(masks.shape)}")


def amc_mean_loss(heat: Tensor, masks: Tensor, delta: float = 0.1) -> Tensor:
    """``max(0, mean_outside - mean_inside + delta)``, means pooled over the batch (scalar)."""
    _check(heat, masks)
    m = masks.to(heat.dtype)
    inside = (heat * m).sum() / m.sum().clamp(min=1.0)
    outside = (heat * (1 - m)).sum() / (1 - m).sum().clamp(min=1.0)
    return (outside - inside + delta).clamp(min=0)


def amc_max_loss(heat: Tensor, masks: Tensor, delta: float = 0.5) -> Tensor:
    """Mean over samples of ``max(0, max_outside - max_inside + delta)`` (scalar)."""
    _check(heat, masks)
    m = masks.to(heat.dtype)
    inside = (heat * m).flatten(1).amax(1)
    outside = (heat * (1 - m)).flatten(1).amax(1)
    return (outside - inside + delta).clamp(min=0).mean()


def amc_loss(heat: Tensor, masks: Tensor, w: AMCWeights = AMCWeights()) -> dict[str, Tensor]:
    """``{"amc", "amc_mean", "amc_max"}``: ``λ1·L_mean + λ2·L_max`` and its two terms (unweighted).

    A term whose weight is 0 is still returned (for logging) but detached, so that a variant without it
    does not pay for its second-order backward.
    """
    l_mean = amc_mean_loss(heat, masks, w.delta1)
    l_max = amc_max_loss(heat, masks, w.delta2)
    total = heat.new_zeros(())
    if w.lambda1:
        total = total + w.lambda1 * l_mean
    if w.lambda2:
        total = total + w.lambda2 * l_max
    return {"amc": total, "amc_mean": l_mean.detach(), "amc_max": l_max.detach()}


def normalise_per_sample(heat: Tensor, eps: float = 1e-8) -> Tensor:
    """Min-max normalise each ``(H, W)`` map of ``(B, H, W)`` to [0, 1] (differentiably)."""
    flat = heat.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo + eps)).view_as(heat)


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """``(B, 4)`` pixel xyxy boxes -> ``(B, H, W)`` float masks of the pixels whose centre lies in the box."""
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (v.view(-1, 1, 1) for v in boxes.float().unbind(-1))
    inside_y = (ys.view(1, -1, 1) > y0) & (ys.view(1, -1, 1) < y1)
    inside_x = (xs.view(1, 1, -1) > x0) & (xs.view(1, 1, -1) < x1)
    return (inside_y & inside_x).float()
