"""Training the ALBEF-style model: the loss of one batch and the loop both AMC phases share.

``albef_amc_loss`` is ITC + ITM + MLM (+ AMC for variants with a loss weight), as described in
``vlrepro.amc.run``; ``train_albef`` runs the shared training loop with the pre-trained parts at their own
learning rate. The pre-training phase (``vlrepro.amc.pretrain``) and each run (``vlrepro.amc.run``) call it
with their own schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vlrepro.amc.config import AMCParams, VariantParams
from vlrepro.amc.model import ALBEF
from vlrepro.explain.gradcam import AttentionRecorder, attention_gradcam, upsample
from vlrepro.losses.amc import AMCWeights, amc_loss, normalise_per_sample
from vlrepro.pretrain.mlm import IGNORE
from vlrepro.train import TrainConfig, TrainResult, fit, groups_by_prefix, run_dir

# Parameters that come from the world CLIP train at ``encoder_lr``; the rest (cross-attention, ITM head) at lr.
PRETRAINED_PREFIXES = ("visual.", "text.", "image_proj.", "text_proj.", "logit_scale.")


def _negatives(sim: Tensor, same: Tensor) -> Tensor:
    """One index per row drawn ∝ softmax(sim) over the other images' entries (uniform if a row has none)."""
    weights = torch.softmax(sim.float(), dim=1).masked_fill(same, 0.0)
    empty = weights.sum(1, keepdim=True) <= 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    return torch.multinomial(weights, 1).squeeze(1)


def albef_amc_loss(
    model: ALBEF, batch: dict[str, Tensor], variant: VariantParams, hard_negatives: bool = False
) -> dict[str, Tensor]:
    """ITC + ITM + MLM (+ AMC) of one batch, as ``vlrepro.amc.run``'s docstring describes; ``model`` is the
    bare ALBEF."""
    images, ids, mask = batch["images"], batch["input_ids"], batch["attention_mask"]
    image_ids = batch["image_ids"]
    b = len(images)
    # Pairs that are not negatives: the same image, or the same text (world texts repeat across images, and
    # an identical text is as true of the other image as of its own).
    same = (image_ids.unsqueeze(0) == image_ids.unsqueeze(1)) | (ids.unsqueeze(0) == ids.unsqueeze(1)).all(-1)
    positives = same.float() / same.float().sum(1, keepdim=True)

    with torch.no_grad():
        model.update_momentum()
    image_tokens, image_tokens_m = model.encode_image_with_momentum(images)
    text_hidden = model.encode_text(ids, mask)
    image_feat = F.normalize(model.image_proj(model.visual.pool(image_tokens)), dim=-1)
    text_feat = F.normalize(model.text_proj(model.text_feature(text_hidden, mask)), dim=-1)
    scale = model.logit_scale()
    with torch.no_grad():
        mom = model.momentum
        image_m = F.normalize(mom["image_proj"](model.visual.pool(image_tokens_m.detach())), dim=-1)
        text_m = F.normalize(mom["text_proj"](model.text_feature(mom["text"](ids, mask), mask)), dim=-1)
        sim_m = scale * image_m @ text_m.t()
        alpha = model.config.distill_alpha
        target_i2t = alpha * torch.softmax(sim_m, 1) + (1 - alpha) * positives
        target_t2i = alpha * torch.softmax(sim_m.t(), 1) + (1 - alpha) * positives
    sim_i2t = scale * image_feat @ text_feat.t()
    itc = -(
        (F.log_softmax(sim_i2t, 1) * target_i2t).sum(1).mean()
        + (F.log_softmax(sim_i2t.t(), 1) * target_t2i).sum(1).mean()
    ) / 2

    # ITM negatives: hard ones drawn by contrastive similarity, or uniform (a zero similarity) among the
    # batch entries of other images.
    with torch.no_grad():
        sim = sim_i2t.detach() if hard_negatives else torch.zeros_like(sim_i2t)
        neg_image = _negatives(sim.t(), same)  # per text: an image
        neg_text = _negatives(sim, same)  # per image: a text
    image_all = torch.cat([image_tokens, image_tokens[neg_image], image_tokens])
    text_all = torch.cat([text_hidden, text_hidden, text_hidden[neg_text]])
    mask_all = torch.cat([mask, mask, mask[neg_text]])
    use_amc = (variant.lambda1 > 0 or variant.lambda2 > 0) and bool(batch["has_box"].any())
    with AttentionRecorder(model.attention_module(variant.gradcam_layer)) as rec:
        logits = model.itm_logits(image_all, text_all, mask_all)
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(logits.device)
    itm = F.cross_entropy(logits, labels)

    mlm_hidden = model.fuse(model.encode_text(batch["mlm_ids"], mask), mask, image_tokens)
    mlm_logits = model.text.mlm_logits(mlm_hidden)
    labels = batch["mlm_labels"].flatten()
    # A batch of a few short texts can draw no token to mask: its MLM term is 0, not the NaN of an empty mean.
    mlm = (F.cross_entropy(mlm_logits.flatten(0, 1), labels, ignore_index=IGNORE) if (labels != IGNORE).any()
           else mlm_logits.sum() * 0.0)  # fmt: skip

    terms = {"itc": itc, "itm": itm, "mlm": mlm}
    loss = itc + itm + mlm
    if use_amc:
        keep = batch["has_box"]
        heat = attention_gradcam(logits[:b][keep, 1].sum(), rec.last, mask_all, model.grid,
                                 model.visual.num_prefix_tokens, create_graph=True)[:b][keep]
        heat = normalise_per_sample(upsample(heat, tuple(batch["masks"].shape[-2:])))
        w = AMCWeights(variant.delta1, variant.delta2, variant.lambda1, variant.lambda2)
        amc = amc_loss(heat, batch["masks"][keep], w)
        loss = loss + amc["amc"]
        terms |= {"amc": amc["amc"].detach(), "amc_mean": amc["amc_mean"], "amc_max": amc["amc_max"]}
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}


def _loss_fn(
    model: torch.nn.Module, batch: dict[str, Tensor], variant: VariantParams, hard_negatives: bool
) -> dict[str, Tensor]:
    bare = model.module if hasattr(model, "module") else model
    return albef_amc_loss(bare, batch, variant, hard_negatives)  # type: ignore[arg-type]


def train_albef(
    model: ALBEF,
    data: torch.utils.data.Dataset,
    collate: Callable,
    params: AMCParams,
    schedule: Any,
    seed: int,
    variant: VariantParams,
    run_id: str,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int = 0,
) -> TrainResult:
    """Train ``model`` in place with ``albef_amc_loss``; the loop's result (history, final metrics).

    ``schedule`` is the phase's section (``amc`` or ``amc.pretrain``): its ``steps``, ``batch_size``, ``lr``
    (new parts), ``encoder_lr`` (``PRETRAINED_PREFIXES``) and ``warmup_steps``; weight decay and the cosine's
    floor are ``params``'. Runs in a scratch folder: nothing to resume from.
    """
    s = schedule
    cfg = TrainConfig(
        steps=s.steps, batch_size=s.batch_size, lr=s.lr, weight_decay=params.weight_decay,
        warmup_steps=min(s.warmup_steps, s.steps - 1), min_lr_ratio=params.min_lr_ratio, seed=seed,
        progress=False, ckpt_every=0, resume=False, log_every=max(1, s.steps // 20), eval_every=eval_every,
        device="auto", cpu_precision=params.precision, num_workers=params.workers,
    )  # fmt: skip
    groups = groups_by_prefix(model, dict.fromkeys(PRETRAINED_PREFIXES, s.encoder_lr))
    loss = partial(_loss_fn, variant=variant, hard_negatives=params.itm_negatives == "hard")
    with run_dir(run_id) as tmp:
        return fit(model, data, loss, cfg, tmp, evaluate=evaluate if eval_every else None, param_groups=groups,
                   collate_fn=collate, run_id=run_id)  # fmt: skip
