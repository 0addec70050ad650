"""RISE (Petsiuk et al., 2018): saliency as the expected class probability under random masks.

``N`` binary ``s x s`` grids (each cell kept with probability ``p``) are upsampled bilinearly to cells of
``ceil(H / s)`` pixels, shifted by a random offset within one cell and cropped to the image; the masked
images (dropped pixels black) are scored, and pixel saliency is ``Σ_i P_i(class) · M_i / (N · p)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def rise_masks(n: int, size: tuple[int, int], cells: int = 8, p: float = 0.5, seed: int = 0) -> Tensor:
    """``(n, 1, H, W)`` soft masks in [0, 1], reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    grid = (torch.rand(n, 1, cells, cells, generator=g) < p).float()
    up = F.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False)
    dy = torch.randint(0, ch, (n,), generator=g)
    dx = torch.randint(0, cw, (n,), generator=g)
    offsets = zip(dy.tolist(), dx.tolist(), strict=True)
    return torch.stack([up[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


@torch.no_grad()
def rise(
    predict: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor, masks: Tensor, p: float, batch: int = 500
) -> Tensor:
    """RISE saliency ``(B, H, W)`` of class ``labels[b]`` for each image; ``predict`` gives probabilities."""
    out = []
    for image, label in zip(images, labels, strict=True):
        probs = torch.cat([predict(image * masks[i : i + batch])[:, label] for i in range(0, len(masks), batch)])
        out.append(torch.einsum("n,nhw->hw", probs, masks[:, 0]) / (len(masks) * p))
    return torch.stack(out)
