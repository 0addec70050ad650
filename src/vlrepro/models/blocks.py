"""Building blocks shared by the models: post-norm cross-attention, SMCIM's CA2M and GLIP's X-MHA deep fusion.

Kept free of timm and transformers so that a training process that works on cached features imports
only torch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CrossAttentionLayer(nn.Module):
    """``x = LN(x + MHCA(x, ctx)); x = LN(x + FFN(x))`` (post-norm, as SMCIM writes CA2M)."""

    def __init__(self, dim: int, num_heads: int, ffn_ratio: int = 2):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * ffn_ratio), nn.GELU(), nn.Linear(dim * ffn_ratio, dim))

    def forward(self, x: Tensor, ctx: Tensor, ctx_padding: Tensor | None = None) -> Tensor:
        """``ctx_padding``: (B, L) True where ``ctx`` is padding (ignored by the attention)."""
        x = self.norm1(x + self.attn(x, ctx, ctx, key_padding_mask=ctx_padding, need_weights=False)[0])
        return self.norm2(x + self.ffn(x))


class CA2M(nn.Module):
    """Cross-modal alternate attention: the visual tokens read the words, then the words read the updated
    visual tokens (SMCIM, eq. of the card)::

        F_v' = CrossAttentionLayer(F_v, F_l)     # F_v* = LN(F_v + MHCA(F_v, F_l)), F_v' = LN(F_v* + FFN(F_v*))
        F_l' = CrossAttentionLayer(F_l, F_v')    # F_l* = LN(F_l + MHCA(F_l, F_v')), F_l' = LN(F_l* + FFN(F_l*))

    Two cross-attentions over HW + L keys cost ``O(HW·L)`` attention scores where one transformer encoder
    layer over the concatenation costs ``O((HW + L)²)``: the paper's efficiency argument.
    """

    def __init__(self, dim: int, num_heads: int, ffn_ratio: int = 2):
        super().__init__()
        self.visual = CrossAttentionLayer(dim, num_heads, ffn_ratio)
        self.language = CrossAttentionLayer(dim, num_heads, ffn_ratio)

    def forward(self, visual: Tensor, words: Tensor, word_padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``visual`` (B, HW, D), ``words`` (B, L, D), ``word_padding`` (B, L) True at padding; returns both updated.

        Padded words are never read (masked keys). Their own rows are computed but carry nothing: no later
        step reads them as keys, and the box comes from [CLS].
        """
        visual = self.visual(visual, words, word_padding)
        return visual, self.language(words, visual)


class BiCrossAttention(nn.Module):
    """GLIP's X-MHA: both modalities attend to each other through *one* score matrix per head.

    ``S = (W_q v)(W_k l)ᵀ / √d`` (visual queries, word keys); the visual tokens read the words with
    ``softmax(S)`` (padded words masked) and the words read the visual tokens with ``softmax(Sᵀ)``, each side
    taking values from the other. Scores are clamped to ±50000 as the reference code does for fp16.
    """

    CLAMP = 50_000.0

    def __init__(self, visual_dim: int, text_dim: int, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k = nn.Linear(visual_dim, dim), nn.Linear(text_dim, dim)
        self.value_v, self.value_l = nn.Linear(visual_dim, dim), nn.Linear(text_dim, dim)
        self.out_v, self.out_l = nn.Linear(dim, visual_dim), nn.Linear(dim, text_dim)

    def _heads(self, x: Tensor) -> Tensor:  # (B, N, dim) -> (B, heads, N, head_dim)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def scores(self, visual: Tensor, words: Tensor) -> Tensor:
        """``(B, heads, N_visual, N_words)``: the shared score matrix, before any mask."""
        s = self._heads(self.q(visual)) @ self._heads(self.k(words)).transpose(-1, -2) / self.head_dim**0.5
        return s.clamp(-self.CLAMP, self.CLAMP)

    def forward(self, visual: Tensor, words: Tensor, word_padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``visual`` (B, N, Dv), ``words`` (B, L, Dl), ``word_padding`` (B, L) True at padding; returns the
        two updates (not yet added to the inputs)."""
        s = self.scores(visual, words)
        to_words = s if word_padding is None else s.masked_fill(word_padding[:, None, None, :], float("-inf"))
        dv = to_words.softmax(-1) @ self._heads(self.value_l(words))  # (B, heads, N, hd)
        dl = s.transpose(-1, -2).softmax(-1) @ self._heads(self.value_v(visual))  # (B, heads, L, hd)
        return self.out_v(dv.transpose(1, 2).flatten(2)), self.out_l(dl.transpose(1, 2).flatten(2))


class BiFusionLayer(nn.Module):
    """One deep-fusion step of GLIP: pre-norm X-MHA, its two updates added to the inputs through learnable
    per-channel layer scales (``init_scale``, GLIP: 1 / number of fusion layers)."""

    def __init__(self, visual_dim: int, text_dim: int, dim: int, num_heads: int, init_scale: float):
        super().__init__()
        self.norm_v, self.norm_l = nn.LayerNorm(visual_dim), nn.LayerNorm(text_dim)
        self.attn = BiCrossAttention(visual_dim, text_dim, dim, num_heads)
        self.scale_v = nn.Parameter(torch.full((visual_dim,), init_scale))
        self.scale_l = nn.Parameter(torch.full((text_dim,), init_scale))

    def forward(self, visual: Tensor, words: Tensor, word_padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        dv, dl = self.attn(self.norm_v(visual), self.norm_l(words), word_padding)
        return visual + self.scale_v * dv, words + self.scale_l * dl
