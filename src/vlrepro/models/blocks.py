"""Building blocks shared by the models: post-norm cross-attention and SMCIM's CA2M.

Kept free of timm and transformers so that a training process that works on cached features imports
only torch.
"""

from __future__ import annotations

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
