"""An ALBEF-style vision-language model, small enough for a CPU, initialised from the world CLIP.

Layout (ALBEF's, with the sizes of the pretrain stage):

- image encoder ``visual``: the timm ViT of the pre-trained dual encoder (``(B, 1 + h*w, D)`` tokens);
- text encoder ``text``: the embeddings and the first ``text_layers`` BERT layers of the dual encoder's
  text tower (self-attention only), plus BERT's MLM head tied to the word embeddings;
- fusion encoder ``fusion``: the remaining BERT layers, each ``self-attention -> cross-attention to the
  image tokens -> feed-forward``; self-attention and feed-forward come from the pre-trained layers, the
  cross-attention (``CrossAttention``) is new (ALBEF also adds it fresh);
- heads: ITC projections and temperature (from the dual encoder), a 2-way ITM head on the fused [CLS],
  momentum copies of the image/text encoders and projections for ITC distillation.

The cross-attention passes its probabilities through ``CrossAttention.probs`` (an ``nn.Identity``): the
hook point where ``vlrepro.explain.gradcam`` records them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vlrepro.explain.gradcam import AttentionRecorder, attention_gradcam, upsample
from vlrepro.losses.contrastive import LogitScale
from vlrepro.models import register_kind
from vlrepro.models.backbones import ViTBackbone, ViTConfig
from vlrepro.models.clip import DualEncoder
from vlrepro.models.text import TextConfig, TextEncoder


@dataclass(frozen=True)
class ALBEFConfig:
    vision: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=TextConfig)  # the whole BERT: text_layers + fusion layers
    text_layers: int = 2  # BERT layers [0, text_layers) encode text; the rest become fusion layers
    embed_dim: int = 64  # ITC projection width
    init_temperature: float = 0.07
    momentum: float = 0.995  # EMA of the momentum encoders
    distill_alpha: float = 0.4  # weight of the momentum model's soft ITC targets
    vision_trainable_blocks: int | None = None  # last ViT blocks that train (None = all; 0 = frozen ViT)
    proj_bias: bool = False  # ITC projections with a bias: ALBEF's own have one, the CLIP-initialised ones none

    @property
    def fusion_layers(self) -> int:
        return self.text.num_layers - self.text_layers

    def __post_init__(self) -> None:
        if not 1 <= self.text_layers < self.text.num_layers:
            raise ValueError(f"text_layers = {self.text_layers} must leave at least one of the BERT's "
                             f"{self.text.num_layers} layers for fusion")


class CrossAttention(nn.Module):
    """Multi-head attention from text tokens (queries) to image tokens (keys/values), BERT's output block."""

    def __init__(self, bert_config: object, image_dim: int):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertSelfOutput

        hidden, heads = bert_config.hidden_size, bert_config.num_attention_heads  # type: ignore[attr-defined]
        self.num_heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(image_dim, hidden)
        self.value = nn.Linear(image_dim, hidden)
        self.probs = nn.Identity()  # hook point: (B, heads, L, N) attention probabilities
        self.output = BertSelfOutput(bert_config)  # dense + dropout + LayerNorm(x + residual)

    def forward(self, hidden: Tensor, image: Tensor) -> Tensor:
        b, length, _ = hidden.shape
        q = self.query(hidden).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.key(image).view(b, image.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(image).view(b, image.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        probs = self.probs(torch.softmax(q @ k.transpose(-1, -2) * self.head_dim**-0.5, dim=-1))
        context = (probs @ v).transpose(1, 2).reshape(b, length, -1)
        return self.output(context, hidden)


class FusionLayer(nn.Module):
    """A pre-trained BERT layer with cross-attention inserted between its self-attention and feed-forward."""

    def __init__(self, bert_layer: nn.Module, bert_config: object, image_dim: int):
        super().__init__()
        self.layer = bert_layer
        self.crossattention = CrossAttention(bert_config, image_dim)

    def forward(self, hidden: Tensor, extended_mask: Tensor, image: Tensor) -> Tensor:
        hidden = self.layer.attention(hidden, extended_mask)[0]
        hidden = self.crossattention(hidden, image)
        return self.layer.feed_forward_chunk(hidden)


def extended_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, L)`` 1/0 -> ``(B, 1, 1, L)`` additive mask for BERT's self-attention (0 or the dtype's min)."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class ALBEF(nn.Module):
    """ITC (momentum-distilled) + ITM + MLM model with a GradCAM-able cross-attention.

    The ITC text feature is the text encoder's pooling (``text.pooling``: ALBEF's [CLS], or the mean of the
    tokens, as the world CLIP aligned its text)."""

    def __init__(self, cfg: ALBEFConfig, tokenizer: object | None = None):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertLayer

        self.config = cfg
        self.visual = ViTBackbone(cfg.vision)
        self.text = TextEncoder(dataclasses.replace(cfg.text, num_layers=cfg.text_layers, mlm_head=True), tokenizer)
        bert_cfg = cfg.text.bert_config()
        # Eager attention in the fusion layers: AMC differentiates their backward (second order), which
        # PyTorch's fused scaled-dot-product kernels do not support on CPU.
        bert_cfg._attn_implementation = "eager"
        self.fusion = nn.ModuleList(
            FusionLayer(BertLayer(bert_cfg), bert_cfg, self.visual.embed_dim) for _ in range(cfg.fusion_layers)
        )
        hidden = cfg.text.hidden_size
        self.image_proj = nn.Linear(self.visual.embed_dim, cfg.embed_dim, bias=cfg.proj_bias)
        self.text_proj = nn.Linear(hidden, cfg.embed_dim, bias=cfg.proj_bias)
        self.logit_scale = LogitScale(cfg.init_temperature)
        self.itm_head = nn.Linear(hidden, 2)
        # Momentum encoders (ITC distillation): EMA copies, never trained by the optimizer.
        self.momentum = nn.ModuleDict(
            {"visual": self.visual, "text": self.text, "image_proj": self.image_proj, "text_proj": self.text_proj}
        )
        self.momentum = copy.deepcopy(self.momentum)
        for p in self.momentum.parameters():
            p.requires_grad_(False)
        depth = self.visual.depth
        trainable = depth if cfg.vision_trainable_blocks is None else cfg.vision_trainable_blocks
        if not 0 <= trainable <= depth:
            raise ValueError(f"vision_trainable_blocks = {trainable}: the ViT has {depth} blocks")
        self.frozen_blocks = depth - trainable
        if self.frozen_blocks:
            # A frozen prefix of the ViT (CPU budget): embeddings and the first blocks keep their pre-trained
            # weights, run without autograd, and are shared by the online and the momentum encoder.
            body = self.visual.body
            frozen = [body.patch_embed, *body.blocks[: self.frozen_blocks]]
            frozen += [body.norm] if trainable == 0 else []
            for module in frozen:
                module.requires_grad_(False)
            for name in ("cls_token", "pos_embed", "reg_token"):
                if isinstance(getattr(body, name, None), nn.Parameter):
                    getattr(body, name).requires_grad_(False)

    # --- building ------------------------------------------------------------------------------------

    @classmethod
    def from_dual_encoder(
        cls,
        clip: DualEncoder,
        text_layers: int,
        mlm_source: TextEncoder | None = None,
        text_pooling: str | None = None,
        **overrides: object,
    ) -> ALBEF:
        """The ALBEF of ``clip``'s architecture with its weights: ViT, BERT layers split into text and fusion,
        ITC projections and temperature; the MLM head's transform from ``mlm_source`` (the pretrain text
        checkpoint) when it has one of the same vocabulary. Cross-attention and the ITM head start random.
        ``text_pooling`` (``"cls"`` / ``"mean"``) replaces the CLIP text tower's pooling for ITC."""
        text_cfg = dataclasses.replace(clip.config.text, mlm_head=True,
                                       pooling=text_pooling or clip.config.text.pooling)  # type: ignore[arg-type]
        cfg = ALBEFConfig(vision=clip.config.vision, text=text_cfg, text_layers=text_layers,
                          embed_dim=clip.config.embed_dim, **overrides)  # type: ignore[arg-type]
        model = cls(cfg, clip.text.tokenizer)
        model.visual.load_state_dict(clip.visual.state_dict())
        bert = clip.text.bert
        model.text.bert.embeddings.load_state_dict(bert.embeddings.state_dict())
        for i in range(text_layers):
            model.text.bert.encoder.layer[i].load_state_dict(bert.encoder.layer[i].state_dict())
        for j, layer in enumerate(model.fusion):
            layer.layer.load_state_dict(bert.encoder.layer[text_layers + j].state_dict())
        model.image_proj.load_state_dict(clip.image_proj.state_dict())
        model.text_proj.load_state_dict(clip.text_proj.state_dict())
        model.logit_scale.load_state_dict(clip.logit_scale.state_dict())
        same_vocab = mlm_source is not None and mlm_source.config.vocab_size == text_cfg.vocab_size
        if mlm_source is not None and mlm_source.mlm_head is not None and same_vocab:
            src = {k: v for k, v in mlm_source.mlm_head.state_dict().items() if "decoder.weight" not in k}
            model.text.mlm_head.load_state_dict(src, strict=False)  # the decoder stays tied to our embeddings
        model.sync_momentum()
        return model

    def with_config(self, **overrides: object) -> ALBEF:
        """A copy of this model (same weights) whose config has ``overrides``, e.g. another number of
        trainable ViT blocks for the next training phase."""
        model = type(self)(dataclasses.replace(self.config, **overrides), self.text.tokenizer)  # type: ignore[arg-type]
        model.load_state_dict(self.state_dict())
        return model

    @torch.no_grad()
    def sync_momentum(self) -> None:
        """Momentum encoders := the online ones (start of training)."""
        for name, module in self.momentum.items():
            module.load_state_dict(getattr(self, name).state_dict())

    @torch.no_grad()
    def update_momentum(self) -> None:
        m = self.config.momentum
        for name, module in self.momentum.items():
            for p_m, p in zip(module.parameters(), getattr(self, name).parameters(), strict=True):
                p_m.mul_(m).add_(p.detach(), alpha=1 - m)

    # --- encoders ------------------------------------------------------------------------------------

    @property
    def grid(self) -> tuple[int, int]:
        return self.visual.grid

    def _vit_prefix(self, images: Tensor) -> Tensor:
        """Tokens after the frozen blocks (timm's forward_features, first part)."""
        body = self.visual.body
        x = body.norm_pre(body.patch_drop(body._pos_embed(body.patch_embed(self.visual.normalise(images)))))
        for block in body.blocks[: self.frozen_blocks]:
            x = block(x)
        return x

    def _vit_suffix(self, visual: ViTBackbone, x: Tensor) -> Tensor:
        for block in visual.body.blocks[self.frozen_blocks :]:
            x = block(x)
        return visual.body.norm(x)

    def encode_image(self, images: Tensor) -> Tensor:
        """``(B, 1 + h*w, D)`` image tokens (the frozen ViT prefix, if any, without autograd)."""
        if not self.frozen_blocks:
            return self.visual(images)
        with torch.no_grad():
            prefix = self._vit_prefix(images)
        return self._vit_suffix(self.visual, prefix)

    def encode_image_with_momentum(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Online and momentum image tokens, sharing the frozen prefix's computation."""
        if not self.frozen_blocks:
            tokens = self.visual(images)
            with torch.no_grad():
                return tokens, self.momentum["visual"](images)
        with torch.no_grad():
            prefix = self._vit_prefix(images)
        tokens = self._vit_suffix(self.visual, prefix)
        if self.frozen_blocks == self.visual.depth:  # fully frozen: the momentum ViT is the same function
            return tokens, tokens
        with torch.no_grad():
            return tokens, self._vit_suffix(self.momentum["visual"], prefix)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.text(input_ids, attention_mask)

    def text_feature(self, text_hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B, D)`` text vector of ITC before projection (the text encoder's ``pooling``)."""
        return self.text.pool(text_hidden, attention_mask)

    def fuse(self, text_hidden: Tensor, attention_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """Fusion encoder: text tokens attend to themselves and to the image tokens, layer by layer."""
        mask = extended_mask(attention_mask, text_hidden.dtype)
        hidden = text_hidden
        for layer in self.fusion:
            hidden = layer(hidden, mask, image_tokens)
        return hidden

    def itm_logits(self, image_tokens: Tensor, text_hidden: Tensor, attention_mask: Tensor) -> Tensor:
        return self.itm_head(self.fuse(text_hidden, attention_mask, image_tokens)[:, 0])

    def attention_module(self, layer: int) -> nn.Module:
        """The hook point of fusion layer ``layer`` (0-based; negative counts from the last)."""
        n = len(self.fusion)
        if not -n <= layer < n:
            raise ValueError(f"gradcam layer {layer} out of range: the model has {n} fusion layers")
        return self.fusion[layer].crossattention.probs

    def gradcam(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        layer: int,
        image_tokens: Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Evaluation heatmaps ``(B, H, W)`` (image size unless ``size``) of the match logit at ``layer``.

        No gradient flows into the encoders (they run without autograd); only the fusion part is
        differentiated, which is all GradCAM needs.
        """
        with torch.no_grad():
            tokens = self.encode_image(images) if image_tokens is None else image_tokens
            text_hidden = self.encode_text(input_ids, attention_mask)
        with torch.enable_grad(), AttentionRecorder(self.attention_module(layer)) as rec:
            logits = self.itm_logits(tokens, text_hidden, attention_mask)
            heat = attention_gradcam(logits[:, 1].sum(), rec.last, attention_mask, self.grid,
                                     self.visual.num_prefix_tokens)
        return upsample(heat.detach(), size or tuple(images.shape[-2:]))


register_kind("albef", __name__, "ALBEF", "ALBEFConfig", reads_text=True)  # the amc_pretrain stage's checkpoint
