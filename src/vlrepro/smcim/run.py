"""One SMCIM run: a variant of the ``smcim`` params section, one seed, trained and evaluated on cached features.

``train_and_evaluate(params, variant, seed, features_dir)`` returns the metrics and the val examples; the
``smcim@<variant>-<seed>`` stage writes them (``python -m vlrepro.smcim run``). Optimiser groups follow the
paper: the fusion and head at ``train.lr``, σ0/σ1 at ``self_paced.sigma_lr`` (no weight decay on σ), the
encoders at ``train.encoder_lr`` — 0 by default, frozen, their outputs cached (``vlrepro.smcim.features``);
above 0 the run goes end to end through ``vlrepro.smcim.online``. The lr drops ×0.1 at ``train.lr_drops``.
``source: real`` trains and scores on the real referring sets (``vlrepro.smcim.real``) on either path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlrepro.baselines import heuristic_baselines
from vlrepro.data.records import load_split
from vlrepro.losses.boxes import giou_loss_per_sample, l1_per_sample
from vlrepro.losses.self_paced import SelfPacedLoss
from vlrepro.metrics.boxes import acc_at_iou, cxcywh_to_xyxy
from vlrepro.smcim import online, real
from vlrepro.smcim.config import SMCIMParams
from vlrepro.smcim.features import Features, level_stages, load_features
from vlrepro.smcim.model import SMCIMConfig, SMCIMOutput, build
from vlrepro.train import TrainConfig, evaluating, fit, run_dir


class CachedExpressions(torch.utils.data.Dataset):
    """Training samples from one or more splits' features; each draw takes a random view of its image."""

    def __init__(self, parts: list[Features]):
        self.parts = parts
        self.index = [(p, m) for p, f in enumerate(parts) for m in range(len(f))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        part, m = self.index[i]
        view = int(torch.randint(self.parts[part].views, ()))  # seeded per sample by the training loop
        return part, m, view

    def collate(self, items: list[tuple[int, int, int]]) -> dict[str, Any]:
        return gather(self.parts, items)


def gather(parts: list[Features], items: list[tuple[int, int, int]]) -> dict[str, Any]:
    """``(part, expression, view)`` triples -> the model's inputs and the target boxes."""
    maps: list[list[Tensor]] = [[] for _ in parts[0].levels]
    words, masks, boxes = [], [], []
    for part, m, view in items:
        f = parts[part]
        for k, level in enumerate(f.levels):
            maps[k].append(level[view, f.image[m]])
        row = f.text[m, view]
        words.append(f.states[row])
        masks.append(f.mask[row])
        boxes.append(f.boxes[view, m])
    length = max(int(m.sum()) for m in masks)
    return {
        "maps": [torch.stack(level).float() for level in maps],
        "words": torch.stack([_to_length(w, length, 1) for w in words]).float(),
        "attention_mask": torch.stack([_to_length(m, length, 0) for m in masks]),
        "boxes": torch.stack(boxes),
    }


def _to_length(x: Tensor, length: int, dim: int) -> Tensor:
    """Cut or zero-pad ``x`` along ``dim`` to ``length`` (each split pads its texts to its own longest one)."""
    if x.shape[dim] >= length:
        return x.narrow(dim, 0, length)
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, length - x.shape[dim]]
    return F.pad(x, pad)


def model_config(p: SMCIMParams, visual_channels: tuple[int, ...], text_width: int, image_size: int) -> SMCIMConfig:
    side = max(1, image_size // p.model.grid_stride)
    m = p.model
    return SMCIMConfig(
        visual_channels=tuple(visual_channels), text_width=text_width, grid=(side, side), levels=m.levels,
        fusion=m.fusion, dim=m.dim, stage1_depth=m.stage1_depth, stage2_depth=m.stage2_depth, num_heads=m.num_heads,
        ffn_ratio=m.ffn_ratio,
    )  # fmt: skip


def cached_config(p: SMCIMParams, f: Features) -> SMCIMConfig:
    """The model config for cached features ``f`` (channels, widths and input side read from them)."""
    # world images are squares of their own size; real ones were letterboxed to the side in their rows
    side = int(round(float(f.size[0, 0]))) if f.letterbox is None else int(f.letterbox[0, 2])
    return model_config(p, tuple(level.shape[2] for level in f.levels), f.states.shape[-1], side)


def centre_cell(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """Row-major index of the grid cell that holds each normalised cxcywh box's centre."""
    h, w = grid
    col = (boxes[:, 0] * w).long().clamp(0, w - 1)
    row = (boxes[:, 1] * h).long().clamp(0, h - 1)
    return row * w + col


class BoxLoss(nn.Module):
    """Self-paced (SMCIM) or plain (``L1 + GIoU``, TransVG) box loss, plus ``cell_loss`` × the centre-cell
    cross-entropy when that weight is above 0; holds σ when self-paced."""

    def __init__(self, p: SMCIMParams, grid: tuple[int, int]):
        super().__init__()
        sp = p.self_paced
        self.self_paced = SelfPacedLoss(sp.sigma_init, sp.lam, sp.detach) if sp.enabled else None
        self.cell_weight, self.grid = p.train.cell_loss, grid

    def forward(self, out: SMCIMOutput, target: Tensor) -> dict[str, Tensor]:
        pred = out.boxes
        l1, giou = l1_per_sample(pred, target), giou_loss_per_sample(pred, target)
        terms = {"loss": (l1 + giou).mean()} if self.self_paced is None else self.self_paced(l1, giou)
        terms |= {"l1": l1.mean().detach(), "giou": giou.mean().detach()}
        if self.cell_weight > 0:
            cell = F.cross_entropy(out.cell_logits, centre_cell(target, self.grid))
            terms["loss"] = terms["loss"] + self.cell_weight * cell
            terms["cell"] = cell.detach()
        return terms


class Trainee(nn.Module):
    """The model and its loss in one module, so that σ travels with the weights through ``fit``."""

    def __init__(self, model: nn.Module, loss: BoxLoss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        inputs = {k: v for k, v in batch.items() if k != "boxes"}  # cached features or images + token ids
        return self.loss(self.model(**inputs), batch["boxes"])


@torch.no_grad()
def predict(model: nn.Module, f: Features, batch: int = 512) -> Tensor:
    """Pixel xyxy predictions for every expression of ``f`` (view 0, the original image)."""
    out = []
    device = next((q.device for q in model.parameters()), torch.device("cpu"))  # fit leaves it on a GPU if any
    with evaluating(model):
        for start in range(0, len(f), batch):
            b = gather([f], [(0, m, 0) for m in range(start, min(start + batch, len(f)))])
            maps = [m.to(device) for m in b["maps"]]
            out.append(model(maps, b["words"].to(device), b["attention_mask"].to(device)).boxes.cpu())
    boxes = cxcywh_to_xyxy(torch.cat(out))
    if f.letterbox is not None:  # real images: from the letterboxed square back to each original image
        return real.normalised_to_original(boxes, f.letterbox)
    return boxes * f.size.repeat(1, 2)


def subset(f: Features, n: int) -> Features:
    """The first ``n`` expressions of ``f`` (the learning curve scores a fixed slice of val)."""
    n = min(n, len(f))
    return replace(f, image=f.image[:n], text=f.text[:n], boxes=f.boxes[:, :n], target_px=f.target_px[:n],
                   size=f.size[:n], texts=f.texts[:n],
                   letterbox=None if f.letterbox is None else f.letterbox[:n])  # fmt: skip


def train_config(p: SMCIMParams, seed: int) -> TrainConfig:
    t = p.train
    milestones = tuple(sorted({max(1, round(f * t.steps)) for f in t.lr_drops})) if t.schedule == "step" else ()
    return TrainConfig(
        steps=t.steps, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, schedule=t.schedule,
        warmup_steps=min(t.warmup_steps, t.steps - 1), milestones=milestones,
        gamma=0.1, seed=seed, ckpt_every=0, log_every=max(10, t.steps // 100), eval_every=t.eval_every,
        progress=False, num_workers=t.workers,
    )  # fmt: skip


@dataclass
class RunResult:
    metrics: dict[str, Any]  # {set: {split: {"acc@0.5": x}}}
    examples: list[dict[str, Any]]  # val expressions of the first eval set: text, image, target and predicted box
    sigma: list[float] | None  # final σ0, σ1 (self-paced runs)
    history: list[dict[str, float]]
    seconds: float


def train_and_evaluate(
    p: SMCIMParams, variant: str, seed: int, features_dir: Path, data_dir: Path | None = None,
    pretrain_dir: Path | None = None,
) -> RunResult:  # fmt: skip
    """Train variant ``variant`` with ``seed`` and score it on every eval split.

    ``train.encoder_lr`` 0: on the cached features in ``features_dir``; > 0: end to end from the splits in
    ``data_dir`` and the encoders in ``pretrain_dir``, the encoders fine-tuned at ``encoder_lr``. ``data_dir`` is
    ``data/world``, or ``data/real`` with ``source: real``; given, it also supplies the gate's control.
    """
    t0 = time.perf_counter()
    v = p.variant(variant)
    torch.manual_seed(seed)  # a fresh process's seed is random in this torch build
    if v.train.encoder_lr == 0:
        train, evals, model, groups = _cached_setup(v, Path(features_dir))
        score = predict
    else:
        if data_dir is None or pretrain_dir is None:
            raise ValueError("train.encoder_lr > 0 fine-tunes the encoders: give data_dir and pretrain_dir")
        train, evals, model, groups = _online_setup(v, Path(data_dir), Path(pretrain_dir))
        score = online.predict
    fusion = model.fusion if isinstance(model, online.EndToEnd) else model
    trainee = Trainee(model, BoxLoss(v, fusion.config.grid))
    if trainee.loss.self_paced is not None:
        groups.append({"params": [trainee.loss.self_paced.sigma], "lr": v.self_paced.sigma_lr, "weight_decay": 0.0,
                       "name": "sigma"})  # fmt: skip
    curve = evals[v.eval_sets[0], "val"]
    if isinstance(curve, Features):
        curve = subset(curve, v.train.eval_limit)

    def learning_curve(m: Trainee) -> dict[str, float]:
        return {"val_acc@0.5": acc_at_iou(score(m.model, curve), _targets(curve))}

    with run_dir(f"smcim-{variant}-{seed}") as tmp:
        result = fit(
            trainee, train, lambda m, b: m(b), train_config(v, seed), tmp, param_groups=groups,
            collate_fn=train.collate, run_id=f"smcim-{variant}",
            evaluate=learning_curve if v.train.eval_every else None,
        )  # fmt: skip
    metrics: dict[str, Any] = {}
    predictions = {}
    for (s, sp), data in evals.items():
        predictions[s, sp] = score(model, data)
        metrics.setdefault(s, {})[sp] = {"acc@0.5": acc_at_iou(predictions[s, sp], _targets(data))}
        if data_dir is not None:  # the learning gate's control, on the same expressions
            split = load_split(Path(data_dir) / s / sp)
            if v.source == "world":
                random_object = heuristic_baselines(split)["random"]
            else:  # every annotated object of the image stands in for the world's scene objects
                random_object = real.random_object_acc(split)
            metrics[s][sp]["random_object_acc@0.5"] = random_object
    sigma = trainee.loss.self_paced.sigma.tolist() if trainee.loss.self_paced is not None else None
    first, pred = evals[v.eval_sets[0], "val"], predictions[v.eval_sets[0], "val"]
    examples = [
        {"set": v.eval_sets[0], "split": "val", "expression": first.texts[m], "image": _image_of(first, m),
         "target": _targets(first)[m].tolist(), "predicted": pred[m].tolist()}
        for m in range(min(p.examples, len(first)))
    ]  # fmt: skip
    return RunResult(metrics, examples, sigma, result.history, time.perf_counter() - t0)


def _cached_setup(v: SMCIMParams, features_dir: Path):
    parts = [load_features(features_dir / s / "train.safetensors") for s in v.train_sets]
    evals = {(s, sp): load_features(features_dir / s / f"{sp}.safetensors")
             for s in v.eval_sets for sp in v.eval_splits(s)}  # fmt: skip
    if (parts[0].letterbox is None) != (v.source == "world"):  # real features carry their letterboxes
        raise ValueError(f"{features_dir}: features of the other source than smcim.source = {v.source!r}; re-run "
                         f"the smcim_features stage (dvc repro smcim_features)")
    model = build(cached_config(v, parts[0]))
    return CachedExpressions(parts), evals, model, [{"params": list(model.parameters()), "name": "fusion"}]


def _online_setup(v: SMCIMParams, data_dir: Path, pretrain_dir: Path):
    from vlrepro.models import load_pretrained
    from vlrepro.smcim.features import load_text_encoder

    cnn, text = load_pretrained(pretrain_dir / "cnn"), load_text_encoder(v, pretrain_dir)
    dataset = online.ImageExpressions if v.source == "world" else real.RealImageExpressions
    sets = [dataset(data_dir / s / "train", text.tokenizer, v, augment=True) for s in v.train_sets]
    train = torch.utils.data.ConcatDataset(sets)
    train.collate = sets[0].collate  # type: ignore[attr-defined]  # one tokenizer and one padding for all sets
    evals = {(s, sp): dataset(data_dir / s / sp, text.tokenizer, v, augment=False)
             for s in v.eval_sets for sp in v.eval_splits(s)}  # fmt: skip
    channels = tuple(cnn.channels[i] for i in level_stages(cnn.reductions, v.model.grid_stride))
    fusion = build(model_config(v, channels, text.hidden_size, sets[0].size))
    model = online.EndToEnd(cnn, text, fusion, v.text_blocks, v.model.grid_stride)
    groups = [
        {"params": list(fusion.parameters()), "name": "fusion"},
        {"params": [*cnn.parameters(), *text.parameters()], "lr": v.train.encoder_lr, "name": "encoders"},
    ]
    return train, evals, model, groups


def _targets(data: Features | online.ImageExpressions) -> Tensor:
    return data.target_px if isinstance(data, Features) else data.boxes_px


def _image_of(data: Features | online.ImageExpressions, m: int) -> int | str:
    """The image of expression ``m``: its index in the world split's images, or a real image's file."""
    if isinstance(data, Features):
        return int(data.image[m]) if data.image_files is None else data.image_files[int(data.image[m])]
    image = data.records[m].image
    return image if isinstance(image, str) else int(image)
