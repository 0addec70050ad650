"""SMCIM's training augmentations, applied jointly to an image, its boxes and (for the flip) its texts.

- horizontal flip (the expressions get "left" and "right" swapped: ``vlrepro.transforms``);
- random affine: zoom and shift (no rotation or shear, which would make the axis-aligned boxes loose);
- colour jitter (brightness, contrast, saturation) and Gaussian blur, which leave the boxes alone.

Images are float ``(N, 3, H, W)`` in [0, 1]; boxes pixel xyxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vlrepro.smcim.config import AugmentParams


@dataclass(frozen=True)
class ViewParams:
    """Per-image draws of one augmented view."""

    flip: Tensor  # (N,) bool
    scale: Tensor  # (N,) zoom factor around the centre
    shift: Tensor  # (N, 2) shift (x, y) in pixels
    brightness: Tensor  # (N,) factors
    contrast: Tensor
    saturation: Tensor
    blur_sigma: Tensor  # (N,) 0 = no blur


def draw_view(n: int, size: int, p: AugmentParams, generator: torch.Generator | None = None) -> ViewParams:
    """Draw ``n`` images' augmentations (``generator`` None: torch's global RNG, which the training loop seeds)."""

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    j = p.colour_jitter
    blur = torch.rand(n, generator=generator) < p.blur_prob
    return ViewParams(
        flip=torch.rand(n, generator=generator) < p.flip_prob,
        scale=uniform(*p.scale, n),
        shift=uniform(-p.translate, p.translate, n, 2) * size,
        brightness=uniform(1 - j, 1 + j, n),
        contrast=uniform(1 - j, 1 + j, n),
        saturation=uniform(1 - j, 1 + j, n),
        blur_sigma=torch.where(blur, uniform(*p.blur_sigma, n), torch.zeros(n)),
    )


def transform_boxes(boxes: Tensor, view: ViewParams, image_index: Tensor, size: int) -> Tensor:
    """Pixel xyxy boxes (M, 4) of images ``image_index`` (M,) -> their boxes in the augmented view."""
    b = boxes.clone()
    flip = view.flip[image_index]
    b[flip] = torch.stack([size - b[flip, 2], b[flip, 1], size - b[flip, 0], b[flip, 3]], -1)
    centre = size / 2
    scale = view.scale[image_index].unsqueeze(-1)
    shift = view.shift[image_index].repeat(1, 2)
    return ((b - centre) * scale + centre + shift).clamp(0, size)


def apply_view(images: Tensor, view: ViewParams) -> Tensor:
    """Augment float images (N, 3, H, W) as drawn in ``view`` (geometry as in :func:`transform_boxes`)."""
    n, _, h, w = images.shape
    x = torch.where(view.flip.view(-1, 1, 1, 1), images.flip(-1), images)
    # affine_grid maps output to input coordinates in [-1, 1]: the inverse of "zoom by s, then shift by t".
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / view.scale
    theta[:, 0, 2] = -view.shift[:, 0] * 2 / w / view.scale
    theta[:, 1, 2] = -view.shift[:, 1] * 2 / h / view.scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = x * view.brightness.view(-1, 1, 1, 1)
    x = (x - grey.mean((2, 3), keepdim=True)) * view.contrast.view(-1, 1, 1, 1) + grey.mean((2, 3), keepdim=True)
    x = (x - grey) * view.saturation.view(-1, 1, 1, 1) + grey
    return gaussian_blur(x.clamp(0, 1), view.blur_sigma)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Blur image i with a Gaussian of std ``sigma[i]`` px (0 = unchanged); kernel 5×5."""
    offsets = torch.arange(-2, 3, dtype=images.dtype)
    safe = sigma.clamp(min=1e-3).view(-1, 1)
    k1 = torch.exp(-(offsets**2) / (2 * safe**2))
    k1 = torch.where(sigma.view(-1, 1) > 0, k1 / k1.sum(-1, keepdim=True), (offsets == 0).to(images.dtype))
    n, c, h, w = images.shape
    x = F.pad(images.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="replicate")
    kx = k1.repeat_interleave(c, 0).view(n * c, 1, 1, 5)
    ky = k1.repeat_interleave(c, 0).view(n * c, 1, 5, 1)
    x = F.conv2d(F.conv2d(x, kx, groups=n * c), ky, groups=n * c)
    return x.view(n, c, h, w)
