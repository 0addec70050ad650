"""One GLIP run: a variant of the ``glip`` params section, one seed, trained and evaluated on the world (or,
with ``glip.source: real``, on COCO, Flickr30k Entities, Visual Genome and COCO captions: ``vlrepro.glip.real``).

``train_and_evaluate(params, variant, seed, data_dir, pretrain_dir)`` builds the model on the pretrain
stage's CNN and BERT (both frozen), trains the head on the variant's sets and returns the metrics:

- ``det``: COCO AP of det/test with the prompt of all 12 classes, for all, base and novel classes;
- ``det_untrained``: the same for an untrained head of the same seed (the learning gate's control);
- ``det_shuffled``: the trained model prompted with every base class under another base class's name and
  every novel class under another novel class's name (the control of zero-shot novel AP: a detector that
  reads the names loses it; one that fires on any unfamiliar word keeps it);
- ``flickr``: phrase-grounding R@1/5/10 on flickr/test;
- ``det_rich`` (with ``eval.rich_prompts``): det/test AP with those classes prompted by their richer text
  (manual prompt engineering, the card's claim 5); ``det`` and ``det_rich`` then also score the renamed
  classes apart (group ``enriched``), the pair the claim compares.

A variant that trains on ``captions`` (GLIP-T, the student) first has the run of its teacher variant with the
same seed (``pseudo.teacher``, saved by ``save_model`` in ``teacher_dir``) box the captions' noun phrases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from vlrepro.data.real.overlap import without_images_of
from vlrepro.data.records import Split, load_split
from vlrepro.glip.config import GLIPParams
from vlrepro.glip.data import GroundingSamples, base_ids, category_names, novel_ids, split_pixels
from vlrepro.glip.evaluate import detect, detection_ap, grounding_recall
from vlrepro.glip.loss import assign, glip_loss
from vlrepro.glip.model import GLIP, GLIPConfig, GLIPHead
from vlrepro.glip.prompts import join_classes, prompt_tokens
from vlrepro.glip.pseudo import pseudo_label
from vlrepro.io import atomic_path
from vlrepro.train import TrainConfig, fit, run_dir

MODEL_FILE = "model.safetensors"
NO_REAL_CAPTIONS = ("it trains on captions boxed by its teacher, and the noun phrases it boxes come from a chunker "
                    "that knows only the world's grammar (vlrepro.glip.pseudo.noun_phrases); real captions need a "
                    "part-of-speech chunker (GLIP uses NLTK's), which is not implemented")  # fmt: skip


def build_model(p: GLIPParams, pretrain_dir: Path) -> tuple[GLIP, Tokenizer]:
    from vlrepro.models import load_pretrained

    cnn, text = load_pretrained(Path(pretrain_dir) / "cnn"), load_pretrained(Path(pretrain_dir) / "text")
    m = p.model
    head = GLIPHead(GLIPConfig(
        visual_dim=sum(cnn.channels), text_dim=text.hidden_size, dim=m.dim, align_dim=m.align_dim,
        fusion_layers=m.fusion_layers, num_heads=m.num_heads, tower_layers=m.tower_layers, prior_prob=m.prior_prob,
    ))  # fmt: skip
    return GLIP(cnn, text, head, m.grid_stride, train_cnn=p.train.cnn_lr > 0), text.tokenizer


def save_model(model: GLIP, path: Path) -> None:
    """The run's weights: the head and the CNN (fine-tuned when ``train.cnn_lr`` > 0); not the frozen BERT,
    which stays the pretrain stage's."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v for k, v in model.state_dict().items() if not k.startswith("text.")}, str(tmp))


def load_run(p: GLIPParams, variant: str, run_dir: Path, pretrain_dir: Path) -> tuple[GLIP, Tokenizer]:
    """The model that the run of ``variant`` saved in ``run_dir`` (``save_model``), in eval mode."""
    from safetensors.torch import load_file

    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run; run `dvc repro glip@{variant}-<seed>` first")
    model, tokenizer = build_model(p.variant(variant), pretrain_dir)
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or any(not k.startswith("text.") for k in missing):
        raise ValueError(f"{path}: its weights do not fit glip variant {variant!r} (changed since the run?)")
    return model.eval(), tokenizer


def first_captions(split: Split, images: int) -> Split:
    """One caption per image (the first) of the first ``images`` images."""
    seen: set[int] = set()
    records = []
    for r in split.records:
        if int(r.image) < images and int(r.image) not in seen:
            seen.add(int(r.image))
            records.append(r)
    return replace(split, records=records)


def loss_fn(p: GLIPParams):
    """``loss(model, batch)`` for ``fit``: targets assigned on the model's grid, then GLIP's loss."""

    def loss(model: GLIP, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = model(batch["images"], batch["input_ids"], batch["attention_mask"])
        stride = model.grid_stride
        grid = (batch["images"].shape[-2] // stride, batch["images"].shape[-1] // stride)
        boxes = [b / stride for b in batch["boxes"]]
        targets = assign(boxes, [torch.arange(len(b)) for b in boxes], batch["maps"], grid,
                         batch["input_ids"].shape[1], p.train.radius)  # fmt: skip
        return glip_loss(out, targets, batch["attention_mask"].bool(), p.train.box_weight)

    return loss


def param_groups(model: GLIP, p: GLIPParams) -> list[dict[str, Any]]:
    groups = [{"params": list(model.head.parameters()), "name": "head"}]
    if p.train.cnn_lr > 0:
        groups.append({"params": list(model.cnn.parameters()), "lr": p.train.cnn_lr, "name": "cnn"})
    return groups


def swapped_names(names: list[str], groups: list[list[int]], seed: int) -> list[str]:
    """``names`` with each group's names cyclically shifted among its classes: no class keeps its own."""
    out = list(names)
    rng = np.random.default_rng(seed)
    for ids in groups:
        if len(ids) > 1:
            shift = int(rng.integers(1, len(ids)))
            for i, j in zip(ids, ids[shift:] + ids[:shift], strict=True):
                out[i] = names[j]
    return out


def rich_names(names: list[str], prompts: dict[str, str]) -> tuple[list[str], list[int]]:
    """``names`` with the classes of ``prompts`` (``eval.rich_prompts``) renamed, and those classes' ids."""
    if unknown := sorted(set(prompts) - set(names)):
        raise ValueError(f"glip.eval.rich_prompts names {unknown}, which are not classes of det/test; its classes: "
                         f"{', '.join(names)}")  # fmt: skip
    return [prompts.get(n, n) for n in names], [i for i, n in enumerate(names) if n in prompts]


def train_config(p: GLIPParams, seed: int) -> TrainConfig:
    t = p.train
    return TrainConfig(
        steps=t.steps, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, schedule="cosine",
        warmup_steps=min(t.warmup_steps, t.steps - 1), seed=seed, ckpt_every=0, log_every=max(10, t.steps // 100),
        eval_every=t.eval_every, progress=False, cpu_precision=t.precision, num_workers=t.workers,
    )  # fmt: skip


@dataclass
class RunResult:
    model: GLIP
    metrics: dict[str, Any]
    examples: list[dict[str, Any]]  # det test images: ground truth and detections above 0.3
    history: list[dict[str, float]]
    seconds: float


def open_split(p: GLIPParams, data_dir: Path, name: str, split: str) -> Split:
    """Set ``name``'s ``split``: the world's (``data/world``), or with ``glip.source: real`` the `data` stage's
    conversion in ``data/real``, letterboxed (``vlrepro.glip.real``)."""
    if p.source == "real":
        from vlrepro.glip.real import open_split as open_real

        return open_real(p, data_dir, name, split)
    return load_split(Path(data_dir) / name / split)


def train_and_evaluate(
    p: GLIPParams, variant: str, seed: int, data_dir: Path, pretrain_dir: Path, teacher_dir: Path | None = None
) -> RunResult:
    t0 = time.perf_counter()
    v = p.variant(variant)
    data_dir = Path(data_dir)
    if p.source == "real" and "captions" in v.train.sets:
        raise NotImplementedError(f"glip variant {variant!r}: {NO_REAL_CAPTIONS}")
    # every split first: a missing dataset or image stops the run before any compute
    det_test, flickr_test = open_split(p, data_dir, "det", "test"), open_split(p, data_dir, "flickr", "test")
    # no training image among the test images (VG holds COCO val2017 and Flickr30k test images), as GLIP's
    # gold grounding data (MDETR's) leaves them out
    splits = [without_images_of(open_split(p, data_dir, s, "train"), [det_test, flickr_test])
              for s in v.train.sets if s != "captions"]  # fmt: skip
    captions = open_split(p, data_dir, "captions", "train") if "captions" in v.train.sets else None
    torch.manual_seed(seed)
    model, tokenizer = build_model(v, pretrain_dir)
    max_len = v.train.max_prompt_tokens
    names = category_names(det_test)
    if (n := prompt_tokens(tokenizer, join_classes(names, range(len(names))).text)) > max_len:
        raise ValueError(f"the prompt of det/test's {len(names)} classes is {n} tokens, over "
                         f"glip.train.max_prompt_tokens = {max_len}: the classes after the cut would never be "
                         f"detected; raise it (within the text encoder's positions)")  # fmt: skip
    untrained = detection_ap(model, det_test, tokenizer, v.eval, max_len)
    if captions is not None:
        if teacher_dir is None:
            raise ValueError(f"glip variant {variant!r} trains on pseudo-labelled captions: give teacher_dir")
        teacher, _ = load_run(p, v.pseudo.teacher, teacher_dir, pretrain_dir)
        splits.append(pseudo_label(teacher, first_captions(captions, v.pseudo.images), tokenizer, max_len,
                                   v.pseudo.threshold))  # fmt: skip
    train = GroundingSamples(splits, tokenizer, max_len, v.train.detection_share)
    curve_images = sorted({int(r.image) for r in det_test.records})[: v.train.curve_images]

    def learning_curve(m: GLIP) -> dict[str, float]:
        ap = detection_ap(m, det_test, tokenizer, v.eval, max_len, images=curve_images)
        return {"val_base_ap50": ap["base"]["AP50"], "val_novel_ap50": ap["novel"]["AP50"]}

    with run_dir(f"glip-{variant}-{seed}") as tmp:
        result = fit(
            model, train, loss_fn(v), train_config(v, seed), tmp, collate_fn=train.collate,
            param_groups=param_groups(model, v),
            evaluate=learning_curve if v.train.eval_every else None, run_id=f"glip-{variant}",
        )  # fmt: skip
    shuffled = swapped_names(names, [base_ids(det_test), novel_ids(det_test)], seed)
    rich, enriched = rich_names(names, v.eval.rich_prompts or {})
    groups = {"enriched": enriched} if enriched else None
    metrics = {
        "det": detection_ap(model, det_test, tokenizer, v.eval, max_len, groups=groups),
        "det_untrained": untrained,
        "det_shuffled": detection_ap(model, det_test, tokenizer, v.eval, max_len, names=shuffled),
        "flickr": grounding_recall(model, flickr_test, tokenizer, max_len, batch=v.eval.batch_size),
    }
    if enriched:
        metrics["det_rich"] = detection_ap(model, det_test, tokenizer, v.eval, max_len, names=rich, groups=groups)
    ids = sorted({int(r.image) for r in det_test.records})[: p.examples]
    dets = detect(model, split_pixels(det_test, ids), join_classes(names, range(len(names))), tokenizer, v.eval,
                  max_len, ids)  # fmt: skip
    examples = [
        {"image": i, "truth": [{"box": list(b), "name": names[c]} for b, c in zip(r.boxes, r.labels, strict=True)],
         "detections": [{"box": d["bbox"], "name": names[d["category_id"]], "score": d["score"]}
                        for d in dets if d["image_id"] == i and d["score"] >= 0.3]}
        for i, r in ((int(r.image), r) for r in det_test.records if int(r.image) in ids)
    ]  # fmt: skip
    return RunResult(model, metrics, examples, result.history, time.perf_counter() - t0)
