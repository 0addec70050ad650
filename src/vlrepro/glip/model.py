"""GLIP at world scale: detection as grounding of a class-list prompt.

The encoders (the world CNN's stage maps resized to one token grid, and a BERT over the prompt) are given
as features; this module holds what GLIP adds on top of them::

    O, P = proj(visual grid tokens), proj(prompt tokens)
    O, P = X-MHA deep fusion × fusion_layers (0: late fusion, GLIP-T(A))      models.blocks.BiFusionLayer
    box      = exp(distances l, t, r, b) from each cell centre, in cells      (anchor-free, FCOS-style)
    centre   = the cell's centerness logit
    S[n, j]  = (W_o O_n) · (W_p normalise(P_j)) / exp(log_scale) + b·P_j + prior bias   (alignment logits)

A box's class score is the mean sigmoid of S over the class's tokens (``prompts.class_scores``), times the
centerness (geometric mean, as GLIP ranks detections).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlrepro.models.blocks import BiFusionLayer


@dataclass(frozen=True)
class GLIPConfig:
    visual_dim: int = 256  # channels of the concatenated, resized CNN stage maps
    text_dim: int = 128  # the text encoder's hidden size
    dim: int = 64  # width of the fused tokens
    align_dim: int = 64  # width of the alignment space
    fusion_layers: int = 2  # X-MHA layers; 0 = late fusion (GLIP-T(A))
    num_heads: int = 4
    tower_layers: int = 2  # 3x3 conv layers between fusion and the prediction layers
    prior_prob: float = 0.01  # initial match probability of every (cell, token)


@dataclass
class GLIPOutput:
    logits: Tensor  # (B, N, L) alignment logits of grid cells x prompt tokens
    boxes: Tensor  # (B, N, 4) predicted (x1, y1, x2, y2) in grid units
    centerness: Tensor  # (B, N) logits


class GLIPHead(nn.Module):
    def __init__(self, cfg: GLIPConfig):
        super().__init__()
        self.config = cfg
        self.visual_in, self.text_in = nn.Linear(cfg.visual_dim, cfg.dim), nn.Linear(cfg.text_dim, cfg.dim)
        scale = 1.0 / max(cfg.fusion_layers, 1)  # GLIP's layer scale: 1 / number of fusion layers
        self.fusion = nn.ModuleList(
            BiFusionLayer(cfg.dim, cfg.dim, cfg.dim, cfg.num_heads, scale) for _ in range(cfg.fusion_layers)
        )
        layers: list[nn.Module] = []
        for _ in range(cfg.tower_layers):  # FCOS/DyHead-style: 3x3 convolutions give a cell its neighbours
            layers += [nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1), nn.GroupNorm(8, cfg.dim), nn.GELU()]
        self.tower = nn.Sequential(*layers)
        self.box = nn.Linear(cfg.dim, 4)
        self.centerness = nn.Linear(cfg.dim, 1)
        self.align_visual, self.align_text = nn.Linear(cfg.dim, cfg.align_dim), nn.Linear(cfg.dim, cfg.align_dim)
        self.token_bias = nn.Linear(cfg.dim, 1)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.prior_bias = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
        nn.init.zeros_(self.token_bias.weight)
        nn.init.zeros_(self.token_bias.bias)

    def forward(self, visual: Tensor, grid: tuple[int, int], text: Tensor, text_padding: Tensor) -> GLIPOutput:
        """``visual`` (B, H*W, visual_dim) in row-major grid order, ``text`` (B, L, text_dim), ``text_padding``
        (B, L) True at padding."""
        o, p = self.visual_in(visual), self.text_in(text)
        for layer in self.fusion:
            o, p = layer(o, p, text_padding)
        h, w = grid
        b = o.shape[0]
        feat = self.tower(o.transpose(1, 2).reshape(b, -1, h, w)).flatten(2).transpose(1, 2)
        p_norm = F.normalize(p, dim=-1)
        logits = self.align_visual(feat) @ self.align_text(p_norm).transpose(1, 2) / self.log_scale.exp()
        logits = logits + self.token_bias(p_norm).transpose(1, 2) + self.prior_bias
        ys, xs = torch.meshgrid(torch.arange(h, device=visual.device), torch.arange(w, device=visual.device),
                                indexing="ij")  # fmt: skip
        centres = torch.stack([xs.flatten(), ys.flatten()], -1).to(feat.dtype) + 0.5  # (N, 2) in grid units
        d = self.box(feat).clamp(max=8.0).exp()  # (B, N, 4): left, top, right, bottom distances
        boxes = torch.cat([centres - d[..., :2], centres + d[..., 2:]], -1)
        return GLIPOutput(logits.masked_fill(text_padding[:, None, :], float("-inf")), boxes,
                          self.centerness(feat).squeeze(-1))  # fmt: skip


def upsample(maps: Tensor, h: int, w: int) -> Tensor:
    """``F.interpolate(maps, (h, w), mode="bilinear")`` as two small matmuls (bilinear resizing is separable):
    the same values up to rounding, and on the CPU its backward is a fraction of interpolate's (25 ms of a
    GLIP training step, bf16)."""

    def weights(n_in: int, n_out: int) -> Tensor:  # (n_out, n_in): row o mixes the inputs of output o
        return F.interpolate(torch.eye(n_in, device=maps.device)[None], size=n_out, mode="linear")[0].T

    ah, aw = weights(maps.shape[-2], h).to(maps.dtype), weights(maps.shape[-1], w).to(maps.dtype)
    return torch.einsum("oh,bchw,pw->bcop", ah, maps, aw)


class GLIP(nn.Module):
    """The world GLIP: a CNN (frozen unless ``train_cnn``) whose stage maps, resized to one grid of
    ``grid_stride`` px cells and concatenated, are the visual tokens; a frozen BERT over the prompt; and the
    trained ``GLIPHead``.

    ``forward(images, input_ids, attention_mask) -> GLIPOutput`` (boxes in grid cells). With
    ``prompt_tuning()`` only a zero-initialised offset on the BERT's token features trains (GLIP's prompt
    tuning); every other weight stays as it is.
    """

    def __init__(self, cnn: nn.Module, text: nn.Module, head: GLIPHead, grid_stride: int, train_cnn: bool = False):
        super().__init__()
        self.cnn, self.text, self.head, self.grid_stride = cnn, text, head, grid_stride
        self.cnn.requires_grad_(train_cnn)
        self.text.requires_grad_(False)
        self.prompt_offset: nn.Parameter | None = None

    def train(self, mode: bool = True) -> GLIP:
        super().train(mode)
        self.cnn.eval()  # batch-norm statistics stay the pre-trained ones, even when the CNN's weights train
        self.text.eval()
        return self

    def prompt_tuning(self, max_len: int) -> nn.Parameter:
        """Freeze everything and add the trainable text-feature offset ``(max_len, text_dim)``, zero at start."""
        self.requires_grad_(False)
        self.prompt_offset = nn.Parameter(torch.zeros(max_len, self.head.config.text_dim))
        return self.prompt_offset

    def visual_tokens(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``(B, h*w, sum of stage channels)`` and the grid ``(h, w)``: finer maps are average-pooled to the
        grid, coarser ones bilinearly upsampled."""
        h, w = images.shape[-2] // self.grid_stride, images.shape[-1] // self.grid_stride
        maps = [
            F.adaptive_avg_pool2d(m, (h, w)) if m.shape[-2] >= h else upsample(m, h, w)
            # channels-last: the CPU's convolutions and the stem's max-pool are faster on it (the max-pool 17
            # against 1-2 ms a batch); the maps are the same up to rounding
            for m in self.cnn(images.contiguous(memory_format=torch.channels_last))
        ]
        return torch.cat(maps, 1).flatten(2).transpose(1, 2), (h, w)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> GLIPOutput:
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(q.requires_grad for q in self.cnn.parameters())):
            visual, grid = self.visual_tokens(images)
        with torch.no_grad():
            words = self.text(input_ids, attention_mask)
        if self.prompt_offset is not None:
            words = words + self.prompt_offset[: words.shape[1]]
        return self.head(visual, grid, words, attention_mask == 0)
