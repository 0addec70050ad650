"""SMCIM (self-paced multi-grained cross-modal interaction) and its TransVG-style baseline for REC.

Both read the same encoder outputs (``vlrepro.smcim.features`` computes them with the pre-trained CNN
and BERT) and regress one normalised box ``(cx, cy, w, h)``:

- visual: ``levels`` of the three stage maps it is given (``smcim.features.visual_levels``: half, once and
  twice the grid's stride, finest first; see :func:`kept_maps` for which), each resized to the ``grid``
  (SMCIM: input/16) and concatenated along channels, ``F_v^0`` (B, HW, ΣC); a learned embedding of each
  cell's centre gives the position that location words need;
- language: the outputs of the last ``levels`` blocks of the BERT (6 layers = 3 blocks of 2), ``F_{l,i}^0``.

SMCIM. Stage 1 (grouping): ``F_v^0`` meets each language level through its own stack of
``stage1_depth`` CA2M blocks at width ``dim`` (C0). Stage 2 (fusion): the groups are concatenated along
channels (width ``levels·dim``, C1) and pass ``stage2_depth`` CA2M blocks. The [CLS] token of the
language side goes through a 3-layer MLP to the box.

Both models also score every visual token after fusion (``cell_logits``, one linear layer): trained with
cross-entropy on the cell that holds the target's centre (``vlrepro.smcim.run``, ``train.cell_loss``), this
auxiliary loss is not in the paper; it gives the fused visual tokens a direct, dense signal of where the
referent is, which doubled the accuracy a [CLS] box regressor reached in the same steps on the world.

TransVG-style baseline (the "CA2M vs transformer encoder" ablation): the same inputs projected to SMCIM's
stage-2 width, a learnable [REG] token, and ``stage1_depth + stage2_depth`` standard (post-norm) transformer
encoder layers over the concatenation [REG] + visual + last-block words; [REG] → the same 3-layer MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from vlrepro.models.blocks import CA2M
from vlrepro.models.rec import cell_centres, resize_to_grid


@dataclass(frozen=True)
class SMCIMConfig:
    visual_channels: tuple[int, ...] = (64, 128, 256)  # the CNN levels available, finest first
    text_width: int = 128  # BERT hidden size
    grid: tuple[int, int] = (4, 4)  # H×W of the visual tokens (SMCIM: input / 16)
    levels: int = 3  # visual and language levels used: maps by `kept_maps`, the last `levels` text blocks
    fusion: Literal["ca2m", "transformer"] = "ca2m"
    dim: int = 64  # C0: width of a stage-1 group (TransVG: levels × dim, SMCIM's C1)
    stage1_depth: int = 2  # CA2M blocks per group
    stage2_depth: int = 3  # CA2M blocks after concatenation (TransVG: stage1_depth + stage2_depth layers)
    num_heads: int = 4
    ffn_ratio: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= len(self.visual_channels):
            raise ValueError(f"levels = {self.levels}: the encoders give {len(self.visual_channels)} levels")
        if self.dim % self.num_heads:
            raise ValueError(f"dim = {self.dim} is not divisible by num_heads = {self.num_heads}")


class SMCIMOutput(NamedTuple):
    boxes: Tensor  # (B, 4) normalised cxcywh
    cell_logits: Tensor  # (B, h*w) a score per visual token: does it hold the referent's centre?


def kept_maps(available: int, levels: int) -> list[int]:
    """Indices (finest first) of the stage maps a model with ``levels`` visual levels reads.

    Given SMCIM's three maps (half, once and twice the grid stride) it keeps the map at the grid's own
    stride first, then the coarser, then the finer one: a one-level model reading only the coarsest map
    would measure lost resolution (a 4x4 map cannot place a 10-20 px world object on an 8x8 grid) rather
    than lost granularity. With any other number of maps, the last ``levels``.
    """
    order = (1, 2, 0) if available == 3 else tuple(range(available - 1, -1, -1))
    return sorted(order[:levels])


def box_mlp(dim: int) -> nn.Sequential:
    """The 3-layer MLP from the [CLS] / [REG] feature to a normalised cxcywh box."""
    layers = [nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 4), nn.Sigmoid()]
    return nn.Sequential(*layers)


def grid_cells(maps: list[Tensor], grid: tuple[int, int]) -> Tensor:
    """Stage maps -> ``(B, HW, ΣC)``: each resized to the grid, concatenated along channels, one row per cell."""
    return resize_to_grid(maps, grid).flatten(2).transpose(1, 2)


class VisualTokens(nn.Module):
    """Grid cells ``(B, HW, C)`` (:func:`grid_cells`) -> ``(B, HW, out)``: projected, plus a cell-position embedding."""

    def __init__(self, channels: int, out: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.proj = nn.Sequential(nn.Linear(channels, out), nn.LayerNorm(out))
        self.pos = nn.Sequential(nn.Linear(2, out), nn.GELU(), nn.Linear(out, out))

    def forward(self, cells: Tensor) -> Tensor:
        return self.proj(cells) + self.pos(cell_centres(*self.grid, cells.device))


class SMCIM(nn.Module):
    """``forward(maps, words, attention_mask) -> SMCIMOutput`` (boxes and cell logits).

    ``maps``: the encoder's stage maps (finest first, at least ``levels`` of them); ``words``: (B, n, L, Ct),
    the outputs of the text encoder's ``n >= levels`` blocks; ``attention_mask``: (B, L), 1 at real tokens.
    """

    def __init__(self, cfg: SMCIMConfig):
        super().__init__()
        if cfg.fusion != "ca2m":
            raise ValueError(f"fusion = {cfg.fusion!r}: SMCIM fuses with CA2M; build TransVG for 'transformer'")
        self.config = cfg
        k, c0 = cfg.levels, cfg.dim
        self.map_indices = kept_maps(len(cfg.visual_channels), k)
        visual_in = sum(cfg.visual_channels[i] for i in self.map_indices)
        self.visual = nn.ModuleList(VisualTokens(visual_in, c0, cfg.grid) for _ in range(k))
        self.words = nn.ModuleList(nn.Sequential(nn.Linear(cfg.text_width, c0), nn.LayerNorm(c0)) for _ in range(k))
        self.stage1 = nn.ModuleList(
            nn.ModuleList(CA2M(c0, cfg.num_heads, cfg.ffn_ratio) for _ in range(cfg.stage1_depth)) for _ in range(k)
        )
        self.stage2 = nn.ModuleList(CA2M(k * c0, cfg.num_heads, cfg.ffn_ratio) for _ in range(cfg.stage2_depth))
        self.head = box_mlp(k * c0)
        self.cell_head = nn.Linear(k * c0, 1)

    def forward(self, maps: list[Tensor], words: Tensor, attention_mask: Tensor) -> SMCIMOutput:
        k = self.config.levels
        cells, words = grid_cells([maps[i] for i in self.map_indices], self.config.grid), words[:, -k:]
        padding = attention_mask == 0
        groups_v, groups_l = [], []
        for i in range(k):  # stage 1: one group per language level
            v, w = self.visual[i](cells), self.words[i](words[:, i])
            for block in self.stage1[i]:
                v, w = block(v, w, padding)
            groups_v.append(v)
            groups_l.append(w)
        v, w = torch.cat(groups_v, -1), torch.cat(groups_l, -1)
        for block in self.stage2:  # stage 2: fusion of the concatenated groups
            v, w = block(v, w, padding)
        return SMCIMOutput(self.head(w[:, 0]), self.cell_head(v).squeeze(-1))


class TransVG(nn.Module):
    """The baseline: ``forward`` as :class:`SMCIM`; the language side is the last block's output only."""

    def __init__(self, cfg: SMCIMConfig):
        super().__init__()
        self.config = cfg
        # SMCIM's stage-2 width (C1 = levels × C0) and as many layers as SMCIM has CA2M blocks along its depth.
        k = cfg.levels
        d, depth = k * cfg.dim, cfg.stage1_depth + cfg.stage2_depth
        self.map_indices = kept_maps(len(cfg.visual_channels), k)
        self.visual = VisualTokens(sum(cfg.visual_channels[i] for i in self.map_indices), d, cfg.grid)
        self.words = nn.Sequential(nn.Linear(cfg.text_width, d), nn.LayerNorm(d))
        self.reg = nn.Parameter(torch.zeros(1, 1, d))
        self.kind = nn.Parameter(torch.zeros(3, d))  # which stream a token comes from: [REG], visual, words
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, d * cfg.ffn_ratio, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = box_mlp(d)
        self.cell_head = nn.Linear(d, 1)

    def forward(self, maps: list[Tensor], words: Tensor, attention_mask: Tensor) -> SMCIMOutput:
        v = self.visual(grid_cells([maps[i] for i in self.map_indices], self.config.grid)) + self.kind[1]
        w = self.words(words[:, -1]) + self.kind[2]
        reg = (self.reg + self.kind[0]).expand(len(v), -1, -1)
        tokens = torch.cat([reg, v, w], 1)
        never = torch.zeros(len(v), 1 + v.shape[1], dtype=torch.bool, device=v.device)  # [REG] and visual tokens
        padding = torch.cat([never, attention_mask == 0], 1)
        out = self.encoder(tokens, src_key_padding_mask=padding)
        return SMCIMOutput(self.head(out[:, 0]), self.cell_head(out[:, 1 : 1 + v.shape[1]]).squeeze(-1))


def build(cfg: SMCIMConfig) -> SMCIM | TransVG:
    return SMCIM(cfg) if cfg.fusion == "ca2m" else TransVG(cfg)
