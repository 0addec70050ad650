"""The ALBEF pre-training phase (stage ``amc_pretrain``): the starting point of every AMC run.

The paper fine-tunes ALBEF weights pre-trained on image-text pairs (COCO, Visual Genome regions, web
captions); its own phase only adds the box masks. The world analog: the ALBEF-style model is built from
the world CLIP (``build_from_clip``), trained with ITC + ITM + MLM on the texts of ``amc.pretrain.sets``
(whole captions and region descriptions, without boxes or AMC loss) and saved to ``checkpoints/albef``. With
``amc.source: real`` the same sets are read from ``data/real`` (COCO captions, Flickr30k, Visual Genome).
Doing the long ITM learning once here, rather than in each of the matrix's runs, is what lets the runs be
short: trained from CLIP for a run's 1,000 steps on region descriptions alone, ITM reached only 0.61-0.65
accuracy on flickr val (1:1, chance 0.5).

The learning curve (``amc.run.curve_point`` on the first flickr val phrases: ITM accuracy against a text
of another image, 1:1, chance 0.5, on the phrases and on their whole captions, and the pointing game of the
first fusion layer's GradCAM, which ALBEF learns from captions alone) is measured before training and every
``eval_every`` steps; it is saved with the checkpoint (``history.json``), its end points in the checkpoint's
meta.

With ``amc.pretrain.weights`` (ALBEF's released ``ALBEF.pth``, as the paper) the phase loads those weights
instead (``vlrepro.amc.release``), measures the same curve point and saves them; nothing is trained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vlrepro.amc.config import AMCParams, VariantParams
from vlrepro.amc.data import RegionPairs, open_split
from vlrepro.amc.model import ALBEF
from vlrepro.amc.run import curve_point, curve_set
from vlrepro.amc.train import train_albef
from vlrepro.data.real.overlap import shared_image_numbers
from vlrepro.io import write_json
from vlrepro.models import load_pretrained, save_pretrained

NO_AMC = VariantParams(lambda1=0.0, lambda2=0.0)


def build_from_clip(params: AMCParams, ckpt_dir: Path, seed: int) -> ALBEF:
    """ALBEF from the pretrain stage's dual encoder (+ the text checkpoint's MLM head); new parts seeded."""
    clip = load_pretrained(Path(ckpt_dir) / "clip")
    text_dir = Path(ckpt_dir) / "text"
    text = load_pretrained(text_dir) if (text_dir / "config.json").is_file() else None
    torch.manual_seed(seed)
    return ALBEF.from_dual_encoder(
        clip, params.text_layers, text, momentum=params.momentum, distill_alpha=params.distill_alpha,  # type: ignore[arg-type]
        vision_trainable_blocks=params.vision_trainable_blocks, text_pooling=params.text_pooling,  # type: ignore[arg-type]
    )


def caption_pairs(
    params: AMCParams, data_dir: Path, tokenizer: Any, image_size: int | None = None
) -> torch.utils.data.ConcatDataset:
    """The train texts of ``amc.pretrain.sets`` as box-free pairs (``image_size``: the model's input, for real
    splits' image files). Image ids are counted across the sets: a real photo that two sets hold (a COCO image
    of COCO captions and VG) has one id, so that its texts are never contrastive negatives of each other."""
    splits = [open_split(data_dir, name, "train", params.source) for name in params.pretrain.sets]
    parts = [RegionPairs(split, tokenizer, params.max_len, params.augment, params.mlm_prob, boxes=False,
                         image_ids=numbers, image_size=image_size)
             for split, numbers in zip(splits, shared_image_numbers(splits), strict=True)]  # fmt: skip
    return torch.utils.data.ConcatDataset(parts)


def build_start(params: AMCParams, ckpt_dir: Path, seed: int) -> ALBEF:
    """ALBEF's released weights (``amc.pretrain.weights``), or the model built from the world CLIP."""
    p = params.pretrain
    if p.weights is None:
        return build_from_clip(params, ckpt_dir, seed)
    from vlrepro.amc.release import albef_from_release

    model = albef_from_release(p.weights, p.tokenizer, momentum=params.momentum, distill_alpha=params.distill_alpha,
                               vision_trainable_blocks=params.vision_trainable_blocks)  # fmt: skip
    release = {"text_layers": model.config.text_layers, "text_pooling": model.text.config.pooling}
    if differ := {k: v for k, v in release.items() if getattr(params, k) != v}:
        raise ValueError(f"amc.pretrain.weights: ALBEF's release has {differ}, the amc section says "
                         f"{ {k: getattr(params, k) for k in differ} }; set them as the release has them (the "
                         f"runs check both)")  # fmt: skip
    return model


def pretrain_albef(params: AMCParams, data_dir: Path, ckpt_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Build (``build_start``), train (``amc.pretrain``, unless the weights are ALBEF's), save to ``out_dir``;
    returns the metrics and timing."""
    t0 = time.perf_counter()
    p = params.pretrain
    model = build_start(params, ckpt_dir, seed)
    steps = p.steps if p.weights is None else 0
    size = model.visual.config.img_size
    curve_data = curve_set(data_dir, p.eval_samples, params.source, size)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return curve_point(m, curve_data, layer=0)  # type: ignore[arg-type]

    before = evaluate(model)
    history: list[dict[str, float]] = [{"step": 0, **before}]
    if steps:
        train = caption_pairs(params, data_dir, model.text.tokenizer, size)
        collate = train.datasets[0].collate  # type: ignore[attr-defined]  # one tokenizer and padding for all
        history += train_albef(model, train, collate, params, p, seed, NO_AMC, f"albef-{seed}", evaluate,
                               p.eval_every).history  # fmt: skip
    model = model.cpu().eval()
    after = evaluate(model) if steps else before
    metrics = {**{k: {"pretrained": v, "untrained": before[k]} for k, v in after.items()},
               "steps": steps, "seconds": time.perf_counter() - t0}  # fmt: skip
    save_pretrained(model, out_dir, meta={"metrics": metrics})
    write_json(Path(out_dir) / "history.json", history)
    return metrics
