"""BLIP's multimodal mixture of encoder-decoder (MED) at world scale, initialised from the world CLIP.

One BERT text transformer used three ways (the card's figure):

- unimodal text encoder: bidirectional self-attention (SA) + feed-forward (FFN), first token [CLS] — ITC;
- image-grounded text encoder: SA, cross-attention (CA) to the image tokens, FFN, first token [ENC] — ITM;
- image-grounded text decoder: *causal* SA, CA, FFN, first token [DEC], then the LM head — LM.

The encoder and the decoder each have a stack of transformers' ``BertLayer`` parts (``attention``,
``crossattention``, ``intermediate`` + ``output``); ``MEDConfig.sharing`` ties the decoder's parts to the
encoder's *by identity* (the same module object, so one set of weights and one gradient):

====================  ==========  ===  ===  ===  ===========
sharing               embeddings  SA   CA   FFN  (the card)
====================  ==========  ===  ===  ===  ===========
``all``               shared      yes  yes  yes
``all_except_ca``     shared      yes  no   yes
``all_except_sa``     shared      no   yes  yes  BLIP's choice
``none``              own         no   no   no
====================  ==========  ===  ===  ===  ===========

The image side is the world CLIP's ViT, frozen (a CPU-budget deviation: BLIP trains it): a run encodes
every image once and trains on its tokens. ITC reads CLIP's pooled image feature and the unimodal
encoder's text pooled as CLIP pooled it (the world CLIP: the mean of the tokens; BLIP: [CLS]), through
CLIP's projections, so the alignment CLIP learned is there from step 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlrepro.losses.contrastive import LogitScale
from vlrepro.models.text import TextConfig, masked_mean

Sharing = Literal["all", "all_except_ca", "all_except_sa", "none"]
SHARING: tuple[str, ...] = ("all", "all_except_ca", "all_except_sa", "none")
IGNORE = -100  # label of a token the LM loss skips (padding, the [DEC] input position)


@dataclass(frozen=True)
class MEDConfig:
    text: TextConfig  # the CLIP text tower's BERT (vocabulary, width, layers)
    image_dim: int  # width of the image tokens
    embed_dim: int = 64  # ITC projection width
    sharing: Sharing = "all_except_sa"
    queue_size: int = 1024  # ITC feature queue (momentum features of earlier batches)
    momentum: float = 0.995
    alpha: float = 0.4  # weight of the momentum model's soft ITC targets
    init_temperature: float = 0.07
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.sharing not in SHARING:
            raise ValueError(f"sharing = {self.sharing!r}: choose from {', '.join(SHARING)}")

    @property
    def enc_id(self) -> int:  # [ENC] and [DEC] are appended to the tokenizer's vocabulary
        return self.text.vocab_size

    @property
    def dec_id(self) -> int:
        return self.text.vocab_size + 1


# --- attention masks ---------------------------------------------------------------------------------------


def bidirectional_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, L)`` 1/0 -> ``(B, 1, 1, L)`` additive mask: every token sees every real token."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def causal_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, 1, L, L)`` additive mask: token ``i`` sees the real tokens ``j <= i`` only."""
    length = attention_mask.shape[1]
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool, device=attention_mask.device))
    allowed = allowed[None, None] & attention_mask[:, None, None, :].bool()
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# --- the text transformer -------------------------------------------------------------------------------------


def _bert_config(text: TextConfig, vocab_size: int) -> object:
    cfg = replace(text, vocab_size=vocab_size).bert_config()
    cfg.is_decoder, cfg.add_cross_attention = True, True  # transformers builds CA only for decoder layers
    cfg._attn_implementation = "sdpa"  # every call passes an explicit mask, so `is_causal` is never implied
    return cfg


def _run_layer(layer: nn.Module, hidden: Tensor, mask: Tensor, image: Tensor | None) -> Tensor:
    hidden = layer.attention(hidden, mask)[0]
    if image is not None:
        hidden = layer.crossattention(hidden, None, image)[0]
    return layer.feed_forward_chunk(hidden)


class MED(nn.Module):
    """The text side of BLIP: embeddings, encoder and decoder layer stacks, LM head (see the module doc)."""

    def __init__(self, cfg: MEDConfig):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertLMPredictionHead

        self.config = cfg
        bert = _bert_config(cfg.text, cfg.text.vocab_size + 2)
        self.image_in = nn.Identity() if cfg.image_dim == cfg.text.hidden_size else nn.Linear(
            cfg.image_dim, cfg.text.hidden_size)  # fmt: skip
        self.embeddings = BertEmbeddings(bert)
        self.encoder = nn.ModuleList(BertLayer(bert) for _ in range(cfg.text.num_layers))
        self.decoder = nn.ModuleList(BertLayer(bert) for _ in range(cfg.text.num_layers))
        s = cfg.sharing
        self.dec_embeddings = BertEmbeddings(bert) if s == "none" else self.embeddings
        for enc, dec in zip(self.encoder, self.decoder, strict=True):
            if s in ("all", "all_except_ca"):
                dec.attention = enc.attention
            if s in ("all", "all_except_sa"):
                dec.crossattention = enc.crossattention
            if s != "none":
                dec.intermediate, dec.output = enc.intermediate, enc.output
        self.lm_head = BertLMPredictionHead(bert)
        self.lm_head.decoder.weight = self.dec_embeddings.word_embeddings.weight  # tied, as BERT
        self.lm_head.decoder.bias = self.lm_head.bias  # one output bias (transformers ties them in BertModel only)

    def _stack(self, layers: nn.ModuleList, hidden: Tensor, mask: Tensor, image: Tensor | None) -> Tensor:
        image = None if image is None else self.image_in(image)
        for layer in layers:
            hidden = _run_layer(layer, hidden, mask, image)
        return hidden

    def encode_text(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Unimodal encoder: ``(B, L, H)``, bidirectional, no cross-attention."""
        h = self.embeddings(input_ids=ids)
        return self._stack(self.encoder, h, bidirectional_mask(attention_mask, h.dtype), None)

    def encode_multimodal(self, ids: Tensor, attention_mask: Tensor, image: Tensor) -> Tensor:
        """Image-grounded encoder: ``(B, L, H)``, first token [ENC], bidirectional SA + CA to ``image``."""
        ids = torch.cat([torch.full_like(ids[:, :1], self.config.enc_id), ids[:, 1:]], 1)
        h = self.embeddings(input_ids=ids)
        return self._stack(self.encoder, h, bidirectional_mask(attention_mask, h.dtype), image)

    def decode(self, ids: Tensor, attention_mask: Tensor, image: Tensor) -> Tensor:
        """Image-grounded decoder: ``(B, L, V)`` next-token logits, first token [DEC], causal SA + CA."""
        ids = torch.cat([torch.full_like(ids[:, :1], self.config.dec_id), ids[:, 1:]], 1)
        h = self.dec_embeddings(input_ids=ids)
        return self.lm_head(self._stack(self.decoder, h, causal_mask(attention_mask, h.dtype), image))

    def load_bert(self, state: dict[str, Tensor]) -> None:
        """Embeddings and layers (SA, FFN) from a ``BertModel`` state dict into encoder and decoder alike
        (BLIP starts both from BERT); [ENC]/[DEC] start as copies of [CLS]. Cross-attention stays random."""
        cls_id = 2  # SPECIAL_TOKENS order: [PAD] [UNK] [CLS] [SEP] [MASK]
        for emb in {id(self.embeddings): self.embeddings, id(self.dec_embeddings): self.dec_embeddings}.values():
            own = {k[len("embeddings."):]: v for k, v in state.items() if k.startswith("embeddings.")}
            words = own.pop("word_embeddings.weight")
            with torch.no_grad():
                emb.word_embeddings.weight[: len(words)] = words
                emb.word_embeddings.weight[len(words):] = words[cls_id]
            emb.load_state_dict(own, strict=False)
        for stack in (self.encoder, self.decoder):
            for i, layer in enumerate(stack):
                prefix = f"encoder.layer.{i}."
                own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                missing, unexpected = layer.load_state_dict(own, strict=False)
                if unexpected or any(not k.startswith("crossattention.") for k in missing):
                    raise ValueError(f"BERT layer {i} does not fit the MED layer: missing {missing}, "
                                     f"unexpected {unexpected}")  # fmt: skip


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (a tied module counts once)."""
    return sum(p.numel() for p in module.parameters())


# --- the whole model ---------------------------------------------------------------------------------------


class BLIP(nn.Module):
    """MED + ITC projections/temperature + ITM head + momentum copies and the ITC queue.

    Inputs are the frozen ViT's image tokens ``(B, 1 + N, D)`` and CLIP's pooled image feature ``(B, D)``.
    """

    def __init__(self, cfg: MEDConfig):
        super().__init__()
        self.config = cfg
        self.med = MED(cfg)
        hidden = cfg.text.hidden_size
        self.image_proj = nn.Linear(cfg.image_dim, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(hidden, cfg.embed_dim, bias=False)
        # BLIP clamps τ to [0.001, 0.5]; LogitScale keeps 1/τ <= 100, CLIP's bound
        self.logit_scale = LogitScale(cfg.init_temperature)
        self.itm_head = nn.Linear(hidden, 2)
        # ITC's momentum side reads the unimodal path only (embeddings + encoder); copies, never optimised.
        self.momentum = copy.deepcopy(nn.ModuleDict({
            "embeddings": self.med.embeddings, "encoder": self.med.encoder,
            "image_proj": self.image_proj, "text_proj": self.text_proj,
        }))  # fmt: skip
        for p in self.momentum.parameters():
            p.requires_grad_(False)
        q = cfg.queue_size
        self.register_buffer("image_queue", F.normalize(torch.randn(q, cfg.embed_dim), dim=-1))
        self.register_buffer("text_queue", F.normalize(torch.randn(q, cfg.embed_dim), dim=-1))
        self.register_buffer("id_queue", torch.full((q,), -1, dtype=torch.long))  # -1: never a positive
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _online_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.momentum[k], m) for k, m in (
            ("embeddings", self.med.embeddings), ("encoder", self.med.encoder),
            ("image_proj", self.image_proj), ("text_proj", self.text_proj))]  # fmt: skip

    @torch.no_grad()
    def sync_momentum(self) -> None:
        for mom, online in self._online_pairs():
            mom.load_state_dict(online.state_dict())

    @torch.no_grad()
    def update_momentum(self) -> None:
        m = self.config.momentum
        for mom, online in self._online_pairs():
            for p_m, p in zip(mom.parameters(), online.parameters(), strict=True):
                p_m.mul_(m).add_(p.detach(), alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, image_feat: Tensor, text_feat: Tensor, image_ids: Tensor) -> None:
        q, b = self.config.queue_size, len(image_ids)
        at = (int(self.queue_ptr) + torch.arange(b, device=image_ids.device)) % q
        self.image_queue[at] = image_feat.to(self.image_queue.dtype)  # bf16 under autocast
        self.text_queue[at] = text_feat.to(self.text_queue.dtype)
        self.id_queue[at] = image_ids
        self.queue_ptr.fill_((int(self.queue_ptr) + b) % q)

    # --- features ----------------------------------------------------------------------------------------

    def text_feature(self, ids: Tensor, attention_mask: Tensor, hidden: Tensor | None = None) -> Tensor:
        """L2-normalised ITC text embedding ``(B, E)`` of the unimodal encoder."""
        hidden = self.med.encode_text(ids, attention_mask) if hidden is None else hidden
        return F.normalize(self.text_proj(self._pool(hidden, attention_mask)), dim=-1)

    def image_feature(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.image_proj(pooled), dim=-1)

    def _pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        return hidden[:, 0] if self.config.text.pooling == "cls" else masked_mean(hidden, attention_mask)

    @torch.no_grad()
    def momentum_features(self, ids: Tensor, attention_mask: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        m = self.momentum
        h = m["embeddings"](input_ids=ids)
        h = self.med._stack(m["encoder"], h, bidirectional_mask(attention_mask, h.dtype), None)
        text = F.normalize(m["text_proj"](self._pool(h, attention_mask)), dim=-1)
        return F.normalize(m["image_proj"](pooled), dim=-1), text

    def itm_logits(self, ids: Tensor, attention_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """``(B, 2)`` (no match, match) logits of the image-grounded encoder's [ENC]."""
        return self.itm_head(self.med.encode_multimodal(ids, attention_mask, image_tokens)[:, 0])


def lm_loss(logits: Tensor, ids: Tensor, attention_mask: Tensor, smoothing: float) -> Tensor:
    """Next-token cross-entropy with label smoothing: position ``t`` predicts ``ids[t + 1]``; padding (and
    anything after it) is skipped. ``logits`` ``(B, L, V)`` from ``MED.decode(ids, ...)``."""
    labels = ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                           label_smoothing=smoothing)  # fmt: skip


def _negatives(sim: Tensor, not_negative: Tensor, hard: bool) -> Tensor:
    """One column per row of the square ``sim`` (row i's positive is column i), drawn ∝ softmax(sim) (``hard``)
    or uniformly over the entries that may be negatives; a row without any (or whose weights underflow) falls
    back to uniform over the other columns."""
    weights = torch.softmax(sim.float(), 1) if hard else torch.ones_like(sim, dtype=torch.float)
    weights = weights.masked_fill(not_negative, 0.0)
    empty = weights.sum(1, keepdim=True) <= 0
    others = 1.0 - torch.eye(len(sim), device=sim.device)
    weights = torch.where(empty, others, weights)
    return torch.multinomial(weights, 1).squeeze(1)


def blip_losses(
    model: BLIP, batch: dict[str, Tensor], alpha: float, hard_negatives: bool = True,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0), balanced_itm: bool = False,
) -> dict[str, Tensor]:  # fmt: skip
    """ITC + ITM + LM of one batch (``weights`` scale them; 0 skips a loss), as the card describes.

    - ITC: similarities to the momentum features of this batch and the queue; soft targets
      ``alpha · softmax(momentum sims) + (1 − alpha) · positives``, where every key of the same image is a
      positive (a caption of the image is never pushed away from it).
    - ITM: per pair one negative image and one negative text, drawn ∝ softmax(similarity) (or uniformly),
      never of the same image, an identical text, or (``batch["matches"]``, the embedded world's verdict) a
      text true of the image; such pairs are ITC positives too. ``balanced_itm`` weights the positive twice,
      so the head learns a 1:1 prior rather than the batch's 1:2 (not in BLIP).
    - LM: the decoder's next-token loss with label smoothing.
    """
    tokens, pooled = batch["image_tokens"], batch["image_pooled"]
    ids, mask, image_ids = batch["input_ids"], batch["attention_mask"], batch["image_ids"]
    b = len(ids)
    w_itc, w_itm, w_lm = weights
    terms: dict[str, Tensor] = {}
    loss = torch.zeros((), device=ids.device)
    if w_itc or w_itm:
        image_feat = model.image_feature(pooled)
        text_feat = model.text_feature(ids, mask)
        scale = model.logit_scale()
        sim_i2t = scale * image_feat @ text_feat.t()
    if w_itc:
        with torch.no_grad():
            model.update_momentum()
            image_m, text_m = model.momentum_features(ids, mask, pooled)
            image_keys = torch.cat([image_m, model.image_queue.clone()])
            text_keys = torch.cat([text_m, model.text_queue.clone()])
            key_ids = torch.cat([image_ids, model.id_queue.clone()])
            same_image = image_ids[:, None] == key_ids[None, :]
            pos_i2t, pos_t2i = same_image.clone(), same_image.clone()
            if "matches" in batch:  # world-true pairs of the batch (the first b keys); rows: images, columns: texts
                pos_i2t[:, :b] |= batch["matches"]
                pos_t2i[:, :b] |= batch["matches"].t()
            pos_i2t = pos_i2t.float() / pos_i2t.sum(1, keepdim=True)
            pos_t2i = pos_t2i.float() / pos_t2i.sum(1, keepdim=True)
            target_i2t = alpha * torch.softmax(scale * image_m @ text_keys.t(), 1) + (1 - alpha) * pos_i2t
            target_t2i = alpha * torch.softmax(scale * text_m @ image_keys.t(), 1) + (1 - alpha) * pos_t2i
        logits_i2t = scale * image_feat @ text_keys.t()
        logits_t2i = scale * text_feat @ image_keys.t()
        itc = -((F.log_softmax(logits_i2t, 1) * target_i2t).sum(1).mean()
                + (F.log_softmax(logits_t2i, 1) * target_t2i).sum(1).mean()) / 2  # fmt: skip
        model.enqueue(image_m, text_m, image_ids)
        loss = loss + w_itc * itc
        terms["itc"] = itc.detach()
    if w_itm:
        # rows: images, columns: texts (the same image, an identical text, or true of the image in the world)
        same = (image_ids[:, None] == image_ids[None, :]) | (ids[:, None] == ids[None, :]).all(-1)
        if "matches" in batch:
            same = same | batch["matches"]
        with torch.no_grad():
            neg_image = _negatives(sim_i2t.detach().t(), same.t(), hard_negatives)  # per text: an image
            neg_text = _negatives(sim_i2t.detach(), same, hard_negatives)  # per image: a text
        logits = model.itm_logits(torch.cat([ids, ids, ids[neg_text]]), torch.cat([mask, mask, mask[neg_text]]),
                                  torch.cat([tokens, tokens[neg_image], tokens]))  # fmt: skip
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(ids.device)
        class_weight = torch.tensor([1.0, 2.0], device=ids.device) if balanced_itm else None
        itm = F.cross_entropy(logits.float(), labels, weight=class_weight)
        loss = loss + w_itm * itm
        terms["itm"] = itm.detach()
    if w_lm:
        lm = lm_loss(model.med.decode(ids, mask, tokens), ids, mask, model.config.label_smoothing)
        loss = loss + w_lm * lm
        terms["lm"] = lm.detach()
    return {"loss": loss, **terms}
