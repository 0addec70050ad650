"""The ALBEF pre-training phase (stage ``amc_pretrain``): the starting point of every AMC run.

The paper fine-tunes ALBEF weights pre-trained on image-text pairs (COCO, Visual Genome regions, web
captions); its own phase only adds the box masks. The world analog: the ALBEF-style model is built from
the world CLIP (``build_from_clip``), trained with ITC + ITM + MLM on the texts of ``amc.pretrain.sets``
(whole captions and region descriptions, without boxes or AMC loss) and saved to ``checkpoints/albef``.
Doing the long ITM learning once here, rather than in each of the matrix's runs, is what lets the runs be
short. Trained from CLIP on region descriptions alone for a run's length, ITM stayed near chance.

The learning curve (``amc.run.curve_point`` on the first flickr val phrases: ITM accuracy against a text
of another image, 1:1, chance 0.5, and the pointing game of the first fusion layer's GradCAM, which ALBEF
learns from captions alone) is measured before training and every ``eval_every`` steps; it is saved with
the checkpoint (``history.json``), its end points in the checkpoint's meta.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from vlrepro.amc.config import AMCParams, VariantParams
from vlrepro.amc.data import RegionPairs, world_split_dir
from vlrepro.amc.model import ALBEF
from vlrepro.data.records import load_split
from vlrepro.io import write_json
from vlrepro.models import load_pretrained, save_pretrained
from vlrepro.train import TrainConfig, fit, groups_by_prefix

NO_AMC = VariantParams(lambda1=0.0, lambda2=0.0)
PRETRAINED_PREFIXES = ("visual.", "text.", "image_proj.", "text_proj.", "logit_scale.")  # from CLIP


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


def caption_pairs(params: AMCParams, data_dir: Path, tokenizer: Any) -> torch.utils.data.ConcatDataset:
    """The train texts of ``amc.pretrain.sets`` as box-free pairs, image ids distinct across sets."""
    parts, offset = [], 0
    for name in params.pretrain.sets:
        split = load_split(world_split_dir(data_dir, name, "train"))
        parts.append(RegionPairs(split, tokenizer, params.max_len, params.augment, params.mlm_prob, boxes=False,
                                 image_offset=offset))  # fmt: skip
        offset += len(split.images)  # type: ignore[arg-type]
    return torch.utils.data.ConcatDataset(parts)


def pretrain_albef(params: AMCParams, data_dir: Path, ckpt_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Build from CLIP, train (``amc.pretrain``), save to ``out_dir``; returns the metrics and timing."""
    from vlrepro.amc.run import _loss_fn, curve_point, curve_set

    t0 = time.perf_counter()
    p = params.pretrain
    model = build_from_clip(params, ckpt_dir, seed)
    curve_data = curve_set(data_dir, p.eval_samples)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return curve_point(m, curve_data, layer=0)  # type: ignore[arg-type]

    before = evaluate(model)
    history: list[dict[str, float]] = [{"step": 0, **before}]
    if p.steps:
        train = caption_pairs(params, data_dir, model.text.tokenizer)
        cfg = TrainConfig(
            steps=p.steps, batch_size=p.batch_size, lr=p.lr, weight_decay=params.weight_decay,
            warmup_steps=min(p.warmup_steps, p.steps - 1), min_lr_ratio=params.min_lr_ratio, seed=seed,
            progress=False, ckpt_every=0, resume=False, log_every=max(1, p.steps // 20), eval_every=p.eval_every,
            device="auto",
        )  # fmt: skip
        groups = groups_by_prefix(model, dict.fromkeys(PRETRAINED_PREFIXES, p.encoder_lr))
        with tempfile.TemporaryDirectory(prefix="albef_") as tmp:
            result = fit(model, train, partial(_loss_fn, variant=NO_AMC, hard_negatives=params.itm_negatives == "hard"),
                         cfg, tmp, evaluate=evaluate, param_groups=groups, collate_fn=train.datasets[0].collate,
                         run_id=f"albef-{seed}")  # fmt: skip
        history += result.history
    model = model.cpu().eval()
    after = evaluate(model)
    metrics = {**{k: {"pretrained": v, "untrained": before[k]} for k, v in after.items()},
               "steps": p.steps, "seconds": time.perf_counter() - t0}  # fmt: skip
    save_pretrained(model, out_dir, meta={"metrics": metrics})
    write_json(Path(out_dir) / "history.json", history)
    return metrics
