"""Scores of a saliency map (an explanation of a classifier's decision) against the object and the model.

- ``binarise(maps, rule)``: ``"mean_std"`` keeps the pixels above the map's mean + 1 std (the ALA reference
  code's rule); ``"half"`` keeps those at or above 0.5 of the min-max normalised map.
- ``iou(binary, masks)``: intersection over union with the object's mask, per image (mIoU = its mean).
- ``insertion_deletion(predict, images, maps, labels, steps)``: the pixels are ordered by saliency, highest
  first. Insertion starts from a black image and pastes them back, deletion blacks them out, ``steps``
  equal chunks at a time; each of the ``steps + 1`` images is scored by the probability ``predict`` gives
  the class in ``labels``. ``auc`` is the normalised trapezoid (Σ − first/2 − last/2) / (n − 1).
- Controls for mIoU: ``gaussian_blob`` (centred, the same for every image) and ``random_maps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Rule = Literal["mean_std", "half"]
RULES: tuple[Rule, ...] = ("mean_std", "half")


def binarise(maps: Tensor, rule: Rule) -> Tensor:
    """``(B, H, W)`` saliency -> boolean ``(B, H, W)`` by ``rule`` (see the module docstring)."""
    flat = maps.flatten(1).float()
    if rule == "mean_std":
        cut = flat.mean(1) + flat.std(1, unbiased=False)
        return maps > cut[:, None, None]
    if rule == "half":
        lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
        return (maps - lo) >= 0.5 * (hi - lo)
    raise ValueError(f"unknown binarisation rule {rule!r}; use one of {RULES}")


def iou(binary: Tensor, masks: Tensor) -> Tensor:
    """Per-image IoU of boolean ``(B, H, W)`` maps with boolean masks; 0 where both are empty."""
    inter = (binary & masks).flatten(1).sum(1).float()
    union = (binary | masks).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def auc(curve: Tensor) -> Tensor:
    """Normalised trapezoid area of ``(..., n)`` curves sampled at n equally spaced points of [0, 1]."""
    n = curve.shape[-1]
    if n < 2:
        raise ValueError("a curve needs at least two points")
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (n - 1)


@torch.no_grad()
def insertion_deletion(
    predict: Callable[[Tensor], Tensor], images: Tensor, maps: Tensor, labels: Tensor, steps: int = 16
) -> dict[str, Tensor]:
    """Insertion and deletion curves ``(B, steps + 1)`` and their AUCs ``(B,)``.

    ``predict(images) -> (B, K)`` class probabilities; ``images`` (B, C, H, W); ``maps`` (B, H, W).
    """
    b, _, h, w = images.shape
    order = maps.reshape(b, -1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    rank = rank.reshape(b, 1, h, w)
    counts = [round(i * h * w / steps) for i in range(steps + 1)]
    rows = torch.arange(b, device=images.device)
    curves: dict[str, list[Tensor]] = {"insertion": [], "deletion": []}
    for k in counts:
        shown = rank < k  # the k most salient pixels
        for name, keep in (("insertion", shown), ("deletion", ~shown)):
            curves[name].append(predict(images * keep)[rows, labels])
    out = {name: torch.stack(c, dim=1) for name, c in curves.items()}
    return out | {f"{name}_auc": auc(c) for name, c in list(out.items())}


def gaussian_blob(size: tuple[int, int], sigma: float = 0.25) -> Tensor:
    """A centred Gaussian ``(H, W)``, ``sigma`` in units of the image side."""
    h, w = size
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h - 0.5
    x = (torch.arange(w, dtype=torch.float32) + 0.5) / w - 0.5
    return torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def random_maps(n: int, size: tuple[int, int], seed: int) -> Tensor:
    """``(n, H, W)`` maps of independent uniform noise (the uninformative control)."""
    return torch.rand(n, *size, generator=torch.Generator().manual_seed(seed))
