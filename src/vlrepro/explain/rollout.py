"""Attention rollout (Abnar & Zuidema, 2020) of a timm ViT: how much each patch flows into [CLS].

Per block, the head-averaged attention ``A`` is mixed with the residual path, ``0.5 A + 0.5 I``, rows
re-normalised, and the blocks' matrices multiplied in order; the [CLS] row over the patch tokens is the map.
The attention probabilities are read by a forward hook on each block's ``attn_drop`` (the module timm passes
them through), with timm's fused attention switched off for the call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlrepro.models.backbones import ViTBackbone


@torch.no_grad()
def attention_rollout(vit: ViTBackbone, images: Tensor) -> Tensor:
    """``(B, h, w)`` rollout maps on the ViT's patch grid (needs a ViT with a [CLS] prefix token)."""
    if vit.num_prefix_tokens != 1:
        raise ValueError(f"attention rollout reads the [CLS] row: the ViT has {vit.num_prefix_tokens} prefix tokens")
    blocks = list(vit.body.blocks)
    probs: list[Tensor] = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: probs.append(o)) for b in blocks]
    fused = [b.attn.fused_attn for b in blocks]
    try:
        for b in blocks:
            b.attn.fused_attn = False
        vit(images)
    finally:
        for b, f in zip(blocks, fused, strict=True):
            b.attn.fused_attn = f
        for h in handles:
            h.remove()
    n = probs[0].shape[-1]
    eye = torch.eye(n, device=images.device)
    flow = eye.expand(len(images), n, n)
    for attn in probs:
        a = 0.5 * attn.mean(1) + 0.5 * eye
        flow = (a / a.sum(-1, keepdim=True)) @ flow
    return flow[:, 0, 1:].reshape(len(images), *vit.grid)
