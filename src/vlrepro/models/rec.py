"""A minimal referring-expression-comprehension model: CNN grid + BERT tokens -> cross-attention -> one box.

It exists to show what the pre-trained weights buy (the pretrain stage trains it from both initialisations)
and as the seed of SMCIM, whose parts it already has in their simplest form:

- ``GridFeatures``: the last ``levels`` CNN stages resized to one grid (input / ``grid_stride``) and
  concatenated, projected to ``dim``, plus an embedding of each cell's position (SMCIM's F_v^0);
- ``CrossAttentionLayer`` (``vlrepro.models.blocks``): ``x = LN(x + MHCA(x, ctx)); x = LN(x + FFN(x))``, one half of
  SMCIM's CA2M;
- ``CellBoxHead``: every cell scores its match with the sentence and proposes a box near its centre; the
  answer is the best cell's box. Trained as a one-stage detector (``vlrepro.pretrain.downstream.rec_loss``:
  cross-entropy on the cell holding the target's centre, L1 + GIoU on that cell's box), it learns in
  hundreds of steps where a [CLS] box regressor needs thousands; its scores double as a heat map.

Boxes are normalised ``(cx, cy, w, h)`` in ``[0, 1]`` of the input image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from vlrepro.models.backbones import CNNBackbone, CNNConfig
from vlrepro.models.blocks import CrossAttentionLayer
from vlrepro.models.text import TextConfig, TextEncoder, masked_mean


@dataclass(frozen=True)
class RECConfig:
    cnn: CNNConfig = field(default_factory=CNNConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig(mlm_head=False))
    dim: int = 128
    levels: int = 4  # last CNN stages fused into the grid
    grid_stride: int = 4  # cells of the grid, in input pixels (64-px world objects are 10-20 px)
    fusion_layers: int = 2
    num_heads: int = 4
    ffn_ratio: int = 2
    max_offset: float = 3.0  # a cell's box centre moves at most this many cells from the cell centre


class RECOutput(NamedTuple):
    boxes: Tensor  # (B, 4) normalised cxcywh: the box of the best-scoring cell
    scores: Tensor  # (B, h*w) cell logits (a heat map of the expression)
    cell_boxes: Tensor  # (B, h*w, 4) every cell's box
    grid: tuple[int, int]


def cell_centres(h: int, w: int, device: torch.device | None = None) -> Tensor:
    """``(h*w, 2)`` normalised (x, y) centres of a row-major grid."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)


def decode_cell_boxes(raw: Tensor, grid: tuple[int, int], max_offset: float) -> Tensor:
    """``(B, h*w, 4)`` raw outputs -> boxes (normalised cxcywh): the centre within ``max_offset`` cells of the
    cell's own centre, width and height in (0, 1)."""
    h, w = grid
    cell_size = raw.new_tensor([1 / w, 1 / h])
    centres = cell_centres(h, w, raw.device) + torch.tanh(raw[..., :2]) * max_offset * cell_size
    return torch.cat([centres.clamp(0, 1), torch.sigmoid(raw[..., 2:])], dim=-1)


def resize_to_grid(maps: list[Tensor], grid: tuple[int, int]) -> Tensor:
    """Feature maps of several strides, each pooled (finer maps) or upsampled (coarser) to ``grid``, concatenated
    along channels."""
    resized = [
        F.adaptive_avg_pool2d(m, grid) if m.shape[-2] >= grid[0] else F.interpolate(m, grid, mode="bilinear")
        for m in maps
    ]
    return torch.cat(resized, dim=1)


class GridFeatures(nn.Module):
    """Feature maps of several strides -> ``(B, h*w, dim)`` cells on the grid of stride ``stride``."""

    def __init__(self, channels: list[int], stride: int, dim: int):
        super().__init__()
        self.stride = stride
        self.proj = nn.Sequential(nn.Conv2d(sum(channels), dim, 1), nn.GroupNorm(1, dim), nn.GELU())
        # Positions enter as an embedding of the cell centre: location words ("leftmost") need them, and an
        # MLP of coordinates works for any grid size, unlike a learned table.
        self.pos = nn.Sequential(nn.Linear(2, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, maps: list[Tensor], image_size: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        h, w = max(1, image_size[0] // self.stride), max(1, image_size[1] // self.stride)
        x = self.proj(resize_to_grid(maps, (h, w))).flatten(2).transpose(1, 2)
        return x + self.pos(cell_centres(h, w, x.device)), (h, w)


class CellBoxHead(nn.Module):
    """Cells + sentence -> per cell a match score and a box near the cell (a one-stage detector's head).

    The score is bilinear, ``<Wq sentence, Wk cell> / sqrt(dim)``: when the cell features already say
    "red", "circle", "on the right" linearly, matching them to the words is a linear problem.
    """

    def __init__(self, dim: int, max_offset: float):
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.box = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 4))
        self.max_offset = max_offset

    def forward(self, cells: Tensor, sentence: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``(scores (B, h*w), boxes (B, h*w, 4))``, boxes as normalised cxcywh."""
        scores = (self.key(cells) @ self.query(sentence).unsqueeze(-1)).squeeze(-1) / cells.shape[-1] ** 0.5
        return scores, decode_cell_boxes(self.box(cells), grid, self.max_offset)


class RECModel(nn.Module):
    """``forward(images, input_ids, attention_mask) -> RECOutput``; ``cnn`` and ``text`` take pre-trained weights."""

    def __init__(self, cfg: RECConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config = cfg
        self.cnn = CNNBackbone(cfg.cnn)
        if not 1 <= cfg.levels <= len(self.cnn.channels):
            raise ValueError(f"levels = {cfg.levels}: the CNN has {len(self.cnn.channels)} feature levels")
        self.text = TextEncoder(cfg.text, tokenizer)
        self.grid = GridFeatures(self.cnn.channels[-cfg.levels :], cfg.grid_stride, cfg.dim)
        self.text_proj = nn.Sequential(nn.Linear(self.text.hidden_size, cfg.dim), nn.LayerNorm(cfg.dim))
        self.fusion = nn.ModuleList(
            CrossAttentionLayer(cfg.dim, cfg.num_heads, cfg.ffn_ratio) for _ in range(cfg.fusion_layers)
        )
        self.head = CellBoxHead(cfg.dim, cfg.max_offset)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> RECOutput:
        cells, grid = self.grid(self.cnn(images)[-self.config.levels :], images.shape[-2:])
        # Word identity (the embedding layer) plus context (the last layer): bag-of-words cues such as "red" or
        # "left" stay sharp, where the last layer alone makes every sentence look alike at first.
        states = self.text.hidden_states(input_ids, attention_mask)
        words = self.text_proj(states[0] + states[-1])
        padding = attention_mask == 0
        sentence = masked_mean(words, attention_mask)
        for layer in self.fusion:
            cells = layer(cells, words, padding)
        scores, cell_boxes = self.head(cells, sentence, grid)
        boxes = cell_boxes[torch.arange(len(scores), device=scores.device), scores.argmax(-1)]
        return RECOutput(boxes, scores, cell_boxes, grid)

    def load_encoders(self, cnn: CNNBackbone | None = None, text: TextEncoder | None = None) -> None:
        """Start from pre-trained encoders (same architecture); a text MLM head, if any, is not needed here."""
        if cnn is not None:
            self.cnn.load_state_dict(cnn.state_dict())
        if text is not None:
            self.text.load_encoder(text)
