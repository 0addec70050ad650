"""ALA: an Attention Lattice Adapter explaining a frozen CLIP image encoder (Hirano et al.).

Top to bottom, for images ``x`` (B, 3, H, W) and the frozen CLIP ViT's block outputs ``F_0 .. F_{L-1}``
(each (B, D, h, w)):

- Side Branch Network (``SideBranch``): a narrow ViT beside CLIP. It embeds the image with its own patches
  (CLIP's grid) and learnable query tokens; before its block ``i`` it adds CLIP layer ``i``'s features,
  fused by LayerNorm + a 1x1 projection (the reference code reads ViT-B/16 layers 0/3/6/9; the world ViT
  has 4 blocks, so every block is read). Its output: one map per query, ``query · patch`` (B, Q, h, w).
- Attention Branch (``AttentionBranch``): a 1x1 conv reduces the Q maps to one map, min-max scaled per
  image to [0, 1]: the explanation. ABN-style, it also classifies: a 1x1 conv to one map per class,
  averaged over the grid.
- Perception Branch (``PerceptionBranch``): CLIP's last feature map multiplied by the attention map (no
  "+1", unlike ABN), two 3x3 convs and a linear classifier on the max over the grid.
- Loss: CE(PB) + w·CE(AB), w = 1/15 (``ala_loss``); the prediction is the PB's.
- Alternative Epoch Architect: in every other epoch the SBN and AB do not run, the attention map is all
  ones and the AB loss is dropped (``ALA.attention_on``; the run flips it between epochs), so the PB also
  learns from the whole feature map and the attention does not collapse to a small region.

``ALAConfig.side_branch = False`` is the "AEA only" ablation: the AB reads CLIP's last feature map
(through a 1x1 conv to Q maps) instead of the SBN. ``ALAConfig.attention = False`` is the plain
classifier the post-hoc baselines explain: the PB on the whole CLIP map, no AB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlrepro.models.backbones import ViTBackbone


@dataclass(frozen=True)
class ALAConfig:
    clip_dim: int = 128  # width of the CLIP ViT's tokens
    clip_layers: tuple[int, ...] = (0, 1, 2, 3)  # CLIP blocks (0-based) the SBN reads; the PB reads the last one
    patch_size: int = 8  # CLIP's patch size: the SBN embeds the image on the same grid
    num_classes: int = 16
    side_branch: bool = True  # False: "AEA only", the attention comes from CLIP's last layer
    attention: bool = True  # False: the plain classifier (no AB), explained by the post-hoc baselines
    side_dim: int = 64
    side_heads: int = 4
    queries: int = 8
    pb_dim: int = 128

    def __post_init__(self) -> None:
        if not self.clip_layers or list(self.clip_layers) != sorted(set(self.clip_layers)):
            raise ValueError(f"clip_layers = {self.clip_layers}: give distinct block indices in increasing order")
        if self.side_dim % self.side_heads:
            raise ValueError(f"side_dim = {self.side_dim} is not divisible by side_heads = {self.side_heads}")


def minmax(maps: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale each map of ``(B, 1, h, w)`` to [0, 1] (per image)."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + eps)


class SideBranch(nn.Module):
    """The SBN: ``forward(images, clip_maps) -> (B, Q, h, w)`` query maps."""

    def __init__(self, cfg: ALAConfig):
        super().__init__()
        d = cfg.side_dim
        self.patch = nn.Conv2d(3, d, cfg.patch_size, stride=cfg.patch_size)
        self.queries = nn.Parameter(torch.randn(cfg.queries, d) * 0.02)
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, cfg.clip_dim), nn.Conv2d(cfg.clip_dim, d, 1)) for _ in cfg.clip_layers
        )  # GroupNorm(1, C) = LayerNorm over a token's channels and the grid, as one op on the map
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, cfg.side_heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in cfg.clip_layers
        )  # fmt: skip
        self.norm = nn.LayerNorm(d)
        self.query_proj, self.patch_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, images: Tensor, clip_maps: list[Tensor]) -> Tensor:
        x = self.patch(images)
        b, d, h, w = x.shape
        q = self.queries.expand(b, -1, -1)
        for fuse, block, clip_map in zip(self.fuse, self.blocks, clip_maps, strict=True):
            x = x + F.interpolate(fuse(clip_map), size=(h, w), mode="bilinear", align_corners=False)
            tokens = block(torch.cat([q, x.flatten(2).transpose(1, 2)], dim=1))
            q, x = tokens[:, : q.shape[1]], tokens[:, q.shape[1] :].transpose(1, 2).reshape(b, d, h, w)
        q, p = self.query_proj(self.norm(q)), self.patch_proj(self.norm(x.flatten(2).transpose(1, 2)))
        return torch.einsum("bqd,bnd->bqn", q, p).reshape(b, -1, h, w) / d**0.5


class AttentionBranch(nn.Module):
    """``forward(query_maps) -> (attention (B, 1, h, w) in [0, 1], class logits (B, K))``."""

    def __init__(self, cfg: ALAConfig):
        super().__init__()
        self.reduce = nn.Conv2d(cfg.queries, 1, 1)
        self.classify = nn.Conv2d(cfg.queries, cfg.num_classes, 1)

    def forward(self, query_maps: Tensor) -> tuple[Tensor, Tensor]:
        return minmax(self.reduce(query_maps)), self.classify(query_maps).mean(dim=(-2, -1))


class PerceptionBranch(nn.Module):
    """``forward(clip_map, attention) -> class logits``: the classifier on the attended CLIP map."""

    def __init__(self, cfg: ALAConfig):
        super().__init__()
        c, d = cfg.clip_dim, cfg.pb_dim
        self.conv1 = nn.Sequential(nn.Conv2d(c, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU())
        self.fc = nn.Linear(d, cfg.num_classes)

    def forward(self, clip_map: Tensor, attention: Tensor | None) -> Tensor:
        x = clip_map if attention is None else clip_map * attention
        return self.fc(self.conv2(self.conv1(x)).amax(dim=(-2, -1)))


@dataclass
class ALAOutput:
    logits: Tensor  # the PB's: the prediction
    ab_logits: Tensor | None  # None when the attention branch did not run
    attention: Tensor | None  # (B, 1, h, w) in [0, 1]; None when it did not run


class ALA(nn.Module):
    """``forward(images) -> ALAOutput``; ``explain(images) -> (B, H, W)`` attention upsampled to the image."""

    def __init__(self, clip_visual: ViTBackbone, cfg: ALAConfig):
        super().__init__()
        self.config = cfg
        self.clip = clip_visual.eval().requires_grad_(False)
        if cfg.attention:
            self.side = SideBranch(cfg) if cfg.side_branch else None
            self.last_to_queries = None if cfg.side_branch else nn.Conv2d(cfg.clip_dim, cfg.queries, 1)
            self.ab = AttentionBranch(cfg)
        self.pb = PerceptionBranch(cfg)
        self.attention_on = cfg.attention  # AEA flips this between epochs while training

    def train(self, mode: bool = True) -> ALA:
        super().train(mode)
        self.clip.eval()  # frozen, never in training mode (no dropout, as in its pre-training's eval)
        return self

    def clip_maps(self, images: Tensor) -> list[Tensor]:
        """The frozen CLIP's outputs of the blocks the SBN reads, then of its last block (the PB's input)."""
        wanted = [*self.config.clip_layers, self.clip.depth - 1]
        blocks = sorted(set(wanted))
        with torch.no_grad():
            maps = dict(zip(blocks, self.clip.intermediates(images, blocks), strict=True))
        return [maps[b] for b in wanted]

    def forward(self, images: Tensor, clip_maps: list[Tensor] | None = None) -> ALAOutput:
        """``clip_maps``: CLIP's block outputs of ``images`` when the caller has them (cached for training)."""
        maps = self.clip_maps(images) if clip_maps is None else clip_maps
        if not (self.config.attention and self.attention_on):
            return ALAOutput(self.pb(maps[-1], None), None, None)
        query_maps = self.side(images, maps[:-1]) if self.side is not None else self.last_to_queries(maps[-1])
        attention, ab_logits = self.ab(query_maps)
        return ALAOutput(self.pb(maps[-1], attention), ab_logits, attention)

    @torch.no_grad()
    def explain(self, images: Tensor) -> Tensor:
        """The attention maps of ``images``, bilinearly upsampled to the image size: ``(B, H, W)``."""
        if not self.config.attention:
            raise ValueError("this ALA has no attention branch (attention = False): explain it post hoc")
        on, self.attention_on = self.attention_on, True
        try:
            attention = self(images).attention
        finally:
            self.attention_on = on
        return F.interpolate(attention, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def ala_loss(out: ALAOutput, labels: Tensor, ab_weight: float) -> dict[str, Tensor]:
    """CE(PB) + w·CE(AB); the AB term only when the attention branch ran (AEA's "on" epochs)."""
    pb = F.cross_entropy(out.logits, labels)
    if out.ab_logits is None:
        return {"loss": pb, "ce_pb": pb.detach()}
    ab = F.cross_entropy(out.ab_logits, labels)
    return {"loss": pb + ab_weight * ab, "ce_pb": pb.detach(), "ce_ab": ab.detach()}
