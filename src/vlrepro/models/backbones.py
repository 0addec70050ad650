"""Vision backbones built with timm: a multi-stage CNN and a ViT, each with an explicit dataclass config.

Both take float images ``(B, 3, H, W)`` in ``[0, 1]`` and normalise them with the mean/std of the timm
architecture themselves, so a checkpoint and the normalisation it was trained under cannot drift apart.

- ``CNNBackbone``: ``features_only`` ResNet-style network, returns one feature map per stage
  (SMCIM and GLIP take several stages; RoIAlign users read ``reductions``).
- ``ViTBackbone``: returns all tokens ``(B, prefix + h*w, D)`` after the final norm; ``patch_grid`` turns
  them into a ``(B, D, h, w)`` map, ``intermediates`` gives the inner layers (ALA's side branch).

With ``weights`` set (the ``paper`` profile) the same builder loads a local timm checkpoint file through
timm's own loader (classifier dropped, position embeddings resampled); nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class CNNConfig:
    arch: str = "resnet10t"
    channels: tuple[int, ...] | None = (32, 64, 128, 256)  # stage widths; None = the architecture's own
    out_indices: tuple[int, ...] = (1, 2, 3, 4)  # timm feature indices (0 = stem); 1..4 = the four stages
    weights: str | None = None  # local timm checkpoint file (paper profile); None = random init


@dataclass(frozen=True)
class ViTConfig:
    arch: str = "vit_tiny_patch16_224"
    img_size: int = 64
    patch_size: int | None = 8  # None = the architecture's own (also for the fields below)
    embed_dim: int | None = 128
    depth: int | None = 4
    num_heads: int | None = 4
    mlp_ratio: float | None = 2.0
    weights: str | None = None  # local timm checkpoint file (paper profile); None = random init
    mean: tuple[float, float, float] | None = None  # input normalisation; None = the architecture's (timm's)
    std: tuple[float, float, float] | None = None


def _pretrained_kwargs(weights: str | None) -> dict[str, Any]:
    if weights is None:
        return {"pretrained": False}
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: timm checkpoint not found (weights are never downloaded; give a local file)")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


class _Normalise(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        # Non-persistent: they come from the architecture, not from training, and stay out of checkpoints.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


class CNNBackbone(nn.Module):
    """A timm CNN in ``features_only`` mode: ``forward(images) -> [stage maps]``, fine to coarse."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        import timm

        self.config = cfg
        extra = {"channels": tuple(cfg.channels)} if cfg.channels is not None else {}
        self.body = timm.create_model(
            cfg.arch, features_only=True, out_indices=tuple(cfg.out_indices), **extra, **_pretrained_kwargs(cfg.weights)
        )
        pcfg = getattr(self.body, "pretrained_cfg", None) or {}
        self.normalise = _Normalise(pcfg.get("mean", (0.485, 0.456, 0.406)), pcfg.get("std", (0.229, 0.224, 0.225)))
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())

    def forward(self, images: Tensor) -> list[Tensor]:
        return list(self.body(self.normalise(images)))


class ViTBackbone(nn.Module):
    """A timm VisionTransformer without classifier: ``forward(images) -> (B, prefix + h*w, D)`` tokens."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        import timm

        self.config = cfg
        sizes = {k: getattr(cfg, k) for k in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")}
        self.body = timm.create_model(
            cfg.arch, img_size=cfg.img_size, num_classes=0, **{k: v for k, v in sizes.items() if v is not None},
            **_pretrained_kwargs(cfg.weights),
        )  # fmt: skip
        pcfg = self.body.pretrained_cfg
        self.normalise = _Normalise(cfg.mean or pcfg["mean"], cfg.std or pcfg["std"])
        self.embed_dim: int = self.body.embed_dim
        self.num_prefix_tokens: int = self.body.num_prefix_tokens
        self.grid: tuple[int, int] = tuple(self.body.patch_embed.grid_size)  # type: ignore[assignment]
        self.depth: int = len(self.body.blocks)

    def forward(self, images: Tensor) -> Tensor:
        return self.body.forward_features(self.normalise(images))

    def pool(self, tokens: Tensor) -> Tensor:
        """``(B, D)``: the [CLS] token, or the mean of all tokens for a ViT without prefix tokens."""
        return tokens[:, 0] if self.num_prefix_tokens else tokens.mean(1)

    def patch_grid(self, tokens: Tensor) -> Tensor:
        """``(B, prefix + h*w, D)`` tokens -> ``(B, D, h, w)`` map of the patch tokens."""
        patches = tokens[:, self.num_prefix_tokens :]
        return patches.transpose(1, 2).reshape(len(tokens), self.embed_dim, *self.grid)

    def intermediates(self, images: Tensor, indices: list[int] | tuple[int, ...]) -> list[Tensor]:
        """``(B, D, h, w)`` outputs of the blocks ``indices`` (0-based), e.g. ALA's layers 0/3/6/9."""
        return self.body.forward_intermediates(self.normalise(images), indices=list(indices), intermediates_only=True)


def images_to_tensor(images: np.ndarray | Tensor) -> Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in ``[0, 1]``, the input of every backbone here."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, Tensor) else images
    return t.movedim(-1, -3).float().div(255.0)
