"""A CLIP-style dual encoder: a timm ViT and a BERT text encoder meeting in one normalised embedding space.

The frozen foundation of ALA, and the initialisation of AMC's and BLIP's towers (as ALBEF/BLIP start
from a ViT and a BERT). The image embedding is the projected [CLS] token (mean of the patch tokens for
a ViT without prefix tokens), the text embedding the projected pooled text feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from vlrepro.losses.contrastive import LogitScale
from vlrepro.models.backbones import ViTBackbone, ViTConfig
from vlrepro.models.text import TextConfig, TextEncoder


@dataclass(frozen=True)
class CLIPConfig:
    vision: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig(mlm_head=False))
    embed_dim: int = 64
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0


class DualEncoder(nn.Module):
    """``forward(images, input_ids, attention_mask) -> (image_emb, text_emb, logit_scale)``; embeddings unit-norm."""

    def __init__(self, cfg: CLIPConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config = cfg
        self.visual = ViTBackbone(cfg.vision)
        self.text = TextEncoder(cfg.text, tokenizer)
        self.image_proj = nn.Linear(self.visual.embed_dim, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text.hidden_size, cfg.embed_dim, bias=False)
        self.logit_scale = LogitScale(cfg.init_temperature, cfg.max_logit_scale)

    def image_features(self, images: Tensor) -> Tensor:
        """The pooled, unprojected image feature ``(B, D)``."""
        return self.visual.pool(self.visual(images))

    def encode_image(self, images: Tensor) -> Tensor:
        return F.normalize(self.image_proj(self.image_features(images)), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        pooled = self.text.pool(self.text(input_ids, attention_mask), attention_mask)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """Embeddings of class prompts (zero-shot classifier weights), tokenised with the attached tokenizer."""
        batch = self.text.tokenize(prompts)
        device = self.image_proj.weight.device
        return self.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.logit_scale()
