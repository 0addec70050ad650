"""One ALA run (a variant of the ``ala`` section, one seed) and the post-hoc baselines, on a cub set: the world's
(``source: world``) or CUB-200-2011 (``source: real``; ``vlrepro.ala.data``).

``train_and_evaluate(params, variant, seed, data_dir, clip_dir)`` trains the adapter on the frozen CLIP image
tower of the pretrain stage (``checkpoints/pretrain/clip``) and scores its attention maps;
``baselines(params, seed, ...)`` trains the plain classifier (the Perception Branch on the whole CLIP map, no
attention branch) and scores the post-hoc explanations of it: Grad-CAM on the PB's last conv (captum), RISE
(its forwards in ``explain.rise_precision``) and attention rollout of the CLIP ViT.

Every method is scored the same way (``score``), on the first ``explain.images`` cub/test images:
accuracy (all test images), mIoU with the target mask under both binarisation rules, Insertion, Deletion and
ID = Insertion − Deletion for the predicted class (black substrate, ``explain.steps`` chunks), the mIoU of two
controls (a centred Gaussian blob, a random map) and the error analysis (of the ``explain.worst`` cases with
the lowest IoU, the share whose binarised map is larger than the mask: over-attended).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vlrepro.ala.config import ALAParams
from vlrepro.ala.data import CUB, load_cub
from vlrepro.ala.model import ALA, ALAConfig, ala_loss
from vlrepro.metrics.explanation import RULES, binarise, gaussian_blob, insertion_deletion, iou, random_maps
from vlrepro.models.backbones import ViTBackbone
from vlrepro.train import TrainConfig, fit, run_dir

Explainer = Callable[[Tensor, Tensor], Tensor]  # (images, target classes) -> (B, H, W) saliency


def build_model(p: ALAParams, clip_visual: ViTBackbone, num_classes: int, attention: bool = True) -> ALA:
    m = p.model
    layers = tuple(range(clip_visual.depth)) if m.clip_layers is None else m.clip_layers
    if max(layers) >= clip_visual.depth:
        raise ValueError(f"ala.model.clip_layers = {list(layers)}: the CLIP ViT has blocks 0..{clip_visual.depth - 1}")
    cfg = ALAConfig(
        clip_dim=clip_visual.embed_dim, clip_layers=layers, patch_size=clip_visual.body.patch_embed.patch_size[0],
        num_classes=num_classes, side_branch=m.side_branch, attention=attention, side_dim=m.side_dim,
        side_heads=m.side_heads, queries=m.queries, pb_dim=m.pb_dim,
    )  # fmt: skip
    return ALA(clip_visual, cfg)


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def train(model: ALA, data: CUB, p: ALAParams, seed: int, evaluate: Callable | None = None) -> list[dict]:
    """Train ``model`` (CLIP frozen) on ``data``; returns the history. With ``train.cache_clip`` CLIP's maps of
    every training image and of its mirror image are computed once (the frozen tower gives the same maps at
    every step); otherwise at every step."""
    t = p.train
    maps = None
    if t.cache_clip:
        views = [data.batch(slice(None)), data.batch(slice(None)).flip(-1)]  # as is, mirrored
        maps = [torch.stack(layer) for layer in zip(*(cached_maps(model, v) for v in views), strict=True)]
    epoch = math.ceil(len(data) / t.batch_size)

    def loss(m: ALA, idx: Tensor) -> dict[str, Tensor]:
        device, idx = _device(m), idx.cpu()
        flip = torch.rand(len(idx)) < t.flip_prob
        images = data.batch(idx, device)
        images = torch.where(flip.to(device)[:, None, None, None], images.flip(-1), images)
        clip_maps = None if maps is None else [layer[flip.long(), idx].to(device) for layer in maps]
        return ala_loss(m(images, clip_maps), data.labels[idx].to(device), t.ab_weight)

    def aea(step: int, record: Any, m: ALA) -> None:  # the next update's epoch decides
        m.attention_on = m.config.attention and (not t.aea or (step // epoch) % 2 == 0)

    cfg = TrainConfig(
        steps=t.steps, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, schedule="cosine",
        warmup_steps=min(t.warmup_steps, t.steps - 1), seed=seed, ckpt_every=0, log_every=max(10, t.steps // 100),
        eval_every=t.eval_every if evaluate else 0, progress=False,
    )  # fmt: skip
    with run_dir(f"ala-{seed}") as tmp:
        result = fit(model, _Indices(len(data)), loss, cfg, tmp, collate_fn=torch.tensor, evaluate=evaluate,
                     callbacks=[aea], run_id="ala")  # fmt: skip
    model.attention_on = model.config.attention
    return result.history


def cached_maps(model: ALA, images: Tensor, batch: int = 500) -> list[Tensor]:
    parts = [model.clip_maps(images[i : i + batch]) for i in range(0, len(images), batch)]
    return [torch.cat(layer) for layer in zip(*parts, strict=True)]


def probabilities(model: ALA) -> Callable[[Tensor], Tensor]:
    """``predict(images) -> (B, K)`` softmax of the model's prediction, on the CPU, whatever the model's device."""

    @torch.no_grad()
    def predict(images: Tensor) -> Tensor:
        device = _device(model)
        return torch.cat([model(images[i : i + 500].to(device)).logits.softmax(-1).cpu()
                          for i in range(0, len(images), 500)])  # fmt: skip

    return predict


def predictions(model: ALA, data: CUB) -> Tensor:
    predict = probabilities(model)
    return torch.cat([predict(data.batch(slice(i, i + 500))).argmax(-1) for i in range(0, len(data), 500)])


def explain_all(explainer: Explainer, data: CUB, targets: Tensor, n: int, batch: int = 50) -> Tensor:
    """The maps ``(n, H, W)`` of the first ``n`` images of ``data`` for classes ``targets``."""
    return torch.cat([explainer(data.batch(slice(i, min(i + batch, n))), targets[i : i + batch])
                      for i in range(0, n, batch)])  # fmt: skip


def ala_explainer(model: ALA) -> Explainer:
    return lambda images, targets: model.explain(images.to(_device(model))).cpu()


def gradcam_explainer(model: ALA) -> Explainer:
    """Grad-CAM (captum's ``LayerGradCam``) on the Perception Branch's last conv, upsampled to the image."""
    from captum.attr import LayerGradCam

    cam = LayerGradCam(lambda x: model(x).logits, model.pb.conv2)

    def explain(images: Tensor, targets: Tensor) -> Tensor:
        device = _device(model)
        maps = cam.attribute(images.to(device), target=targets.to(device), relu_attributions=True).detach()
        return F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].cpu()

    return explain


def rise_explainer(model: ALA, p: ALAParams, seed: int) -> Explainer:
    from vlrepro.explain.rise import rise, rise_masks

    e = p.explain
    masks: list[Tensor] = []

    predict = probabilities(model)

    def predict_in_precision(images: Tensor) -> Tensor:
        with torch.autocast(_device(model).type, dtype=torch.bfloat16, enabled=e.rise_precision == "bf16"):
            return predict(images).float()

    def explain(images: Tensor, targets: Tensor) -> Tensor:
        if not masks:
            masks.append(rise_masks(e.rise_masks, tuple(images.shape[-2:]), e.rise_cells, e.rise_p, seed))
        return rise(predict_in_precision, images, targets, masks[0], e.rise_p)

    return explain


def rollout_explainer(model: ALA) -> Explainer:
    from vlrepro.explain.rollout import attention_rollout

    def explain(images: Tensor, targets: Tensor) -> Tensor:
        maps = attention_rollout(model.clip, images.to(_device(model)))[:, None]
        return F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].cpu()

    return explain


def score(model: ALA, explainer: Explainer, test: CUB, p: ALAParams, seed: int) -> tuple[dict, dict]:
    """(metrics, examples) of one explanation method of ``model`` (see the module docstring)."""
    model.eval()
    e = p.explain
    pred = predictions(model, test)
    n = min(e.images, len(test))
    images, masks, targets = test.batch(slice(0, n)), test.masks[:n], pred[:n]
    maps = explain_all(explainer, test, targets, n)
    size = tuple(images.shape[-2:])
    controls = {"blob": gaussian_blob(size, e.blob_sigma).expand(n, *size), "random": random_maps(n, size, seed)}
    out = {"accuracy": (pred == test.labels).float().mean().item(), "chance": 1 / len(test.names)}
    for rule in RULES:
        suffix = "" if rule == "mean_std" else f"_{rule}"
        out[f"miou{suffix}"] = iou(binarise(maps, rule), masks).mean().item()
        for name, control in controls.items():
            out[f"miou{suffix}_{name}"] = iou(binarise(control, rule), masks).mean().item()
    curves = insertion_deletion(probabilities(model), images, maps, targets, e.steps)
    out |= {"insertion": curves["insertion_auc"].mean().item(), "deletion": curves["deletion_auc"].mean().item()}
    out["id"] = out["insertion"] - out["deletion"]
    binary = binarise(maps, "mean_std")
    worst = iou(binary, masks).argsort()[: min(e.worst, n)]
    over = binary[worst].flatten(1).sum(1) > masks[worst].flatten(1).sum(1)
    out["worst_over_attended"] = over.float().mean().item()
    k = min(p.examples, n)
    examples = {
        "maps": maps[:k].numpy().round(3).tolist(), "pred": pred[:k].tolist(),
        "insertion_curve": curves["insertion"].mean(0).tolist(), "deletion_curve": curves["deletion"].mean(0).tolist(),
    }  # fmt: skip
    return {"cub": {"test": out}}, examples


@dataclass
class RunResult:
    metrics: dict[str, dict]  # method -> metrics
    examples: dict[str, dict]  # method -> maps of the first test images, curves
    history: list[dict[str, float]]
    seconds: float


def _load(p: ALAParams, data_dir: Path, clip_dir: Path) -> tuple[CUB, CUB, CUB, ViTBackbone]:
    """train, val, test and the frozen CLIP image tower (the pretrain stage's)."""
    from vlrepro.models import load_pretrained

    clip = load_pretrained(Path(clip_dir)).visual
    return *load_cub(p.source, data_dir, clip.config.img_size), clip


def train_and_evaluate(p: ALAParams, variant: str, seed: int, data_dir: Path, clip_dir: Path) -> RunResult:
    t0 = time.perf_counter()
    v = p.variant(variant)
    train_set, val, test, clip = _load(v, data_dir, clip_dir)
    torch.manual_seed(seed)
    model = build_model(v, clip, len(train_set.names))

    def learning_curve(m: ALA) -> dict[str, float]:
        n = min(len(val), v.explain.images)
        maps = explain_all(ala_explainer(m), val, val.labels, n)
        return {"val_accuracy": (predictions(m, val) == val.labels).float().mean().item(),
                "val_miou": iou(binarise(maps, "mean_std"), val.masks[:n]).mean().item()}  # fmt: skip

    history = train(model, train_set, v, seed, learning_curve if v.train.eval_every else None)
    metrics, examples = score(model, ala_explainer(model), test, v, seed)
    return RunResult({variant: metrics}, {variant: examples}, history, time.perf_counter() - t0)


def baselines(p: ALAParams, seed: int, data_dir: Path, clip_dir: Path) -> RunResult:
    """The plain classifier of ``seed``, explained by each method of ``p.baselines``."""
    t0 = time.perf_counter()
    train_set, _, test, clip = _load(p, data_dir, clip_dir)
    torch.manual_seed(seed)
    model = build_model(p, clip, len(train_set.names), attention=False)
    history = train(model, train_set, p, seed)
    explainers = {"gradcam": lambda: gradcam_explainer(model), "rise": lambda: rise_explainer(model, p, seed),
                  "rollout": lambda: rollout_explainer(model)}  # fmt: skip
    metrics, examples = {}, {}
    for method in p.baselines:
        metrics[method], examples[method] = score(model, explainers[method](), test, p, seed)
    return RunResult(metrics, examples, history, time.perf_counter() - t0)
