"""Blind baselines for the referring sets: how far one gets without reading the expression.

- ``random``: a scene object picked uniformly at random — reported as its expectation (the share of the
  scene's objects that would count as a hit), so it needs no sampling. This assumes perfect object
  proposals, an upper bound on a random *box*.
- ``largest`` / ``centre``: the scene's largest object / the one whose box centre is nearest the image
  centre (RefCOCO's classic priors).
- ``image_only``: a CNN (timm ResNet) that sees the image and the scene's object boxes (oracle proposals)
  and is trained to pick the target without the text. It can learn every prior of the data except the
  text, so it bounds what a grounding model gets "for free".

A referring task that needs both modalities keeps all of these well under what a grounding model reaches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlrepro.data.config import BaselineParams
from vlrepro.data.records import Split
from vlrepro.metrics.boxes import acc_at_iou, paired_iou


def _scene_boxes(split: Split, image: int) -> np.ndarray:
    return np.asarray([obj["box"] for obj in split.meta["scenes"][image]], dtype=np.float32)


def heuristic_baselines(split: Split, threshold: float = 0.5) -> dict[str, float]:
    """Acc@``threshold`` of the random, largest and centre-most object baselines on ``split``."""
    hits = {"random": [], "largest": [], "centre": []}
    for r in split.records:
        objs = torch.from_numpy(_scene_boxes(split, r.image))
        target = torch.tensor([r.boxes[0]]).expand(len(objs), 4)
        hit = (paired_iou(objs, target) >= threshold).float()
        areas = (objs[:, 2] - objs[:, 0]) * (objs[:, 3] - objs[:, 1])
        centres = (objs[:, :2] + objs[:, 2:]) / 2
        dist = (centres - torch.tensor([r.width / 2, r.height / 2])).norm(dim=1)
        hits["random"].append(hit.mean().item())
        hits["largest"].append(hit[areas.argmax()].item())
        hits["centre"].append(hit[dist.argmin()].item())
    return {k: float(np.mean(v)) for k, v in hits.items()}


class ReferringScenes(torch.utils.data.Dataset):
    """(image, scene boxes, valid mask, target index) of a referring split; the text is dropped on purpose."""

    def __init__(self, split: Split):
        self.images = torch.from_numpy(np.array(split.images))  # (N, H, W, 3) uint8, read into memory once
        self.index = torch.tensor([r.image for r in split.records])
        scenes = split.meta["scenes"]
        k = max(len(objs) for objs in scenes)
        self.boxes = torch.zeros(len(scenes), k, 4)
        self.valid = torch.zeros(len(scenes), k, dtype=torch.bool)
        for i, objs in enumerate(scenes):
            self.boxes[i, : len(objs)] = torch.tensor([o["box"] for o in objs], dtype=torch.float32)
            self.valid[i, : len(objs)] = True
        self.targets = torch.tensor([r.meta["target"] for r in split.records])
        self.target_boxes = torch.tensor([r.boxes[0] for r in split.records])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        j = self.index[i]
        return to_tensor(self.images[j]), self.boxes[j], self.valid[j], self.targets[i]


def to_tensor(images: Tensor) -> Tensor:
    """uint8 HWC (or NHWC) → float CHW in [-1, 1]."""
    return images.movedim(-1, -3).float().div(127.5).sub(1.0)


class ImageOnlyRanker(nn.Module):
    """Scores every scene object from the image alone and picks the best: oracle proposals, no text.

    Each object is described by the CNN features under its box (RoIAlign) and its box geometry, so the
    model can learn any prior of the data — size, position, colour, category, clutter — except the text.
    """

    def __init__(self, arch: str = "resnet10t"):
        super().__init__()
        import timm

        # Features up to stride 8 are enough for 64-px objects, and timm drops the deeper stages.
        self.backbone = timm.create_model(arch, pretrained=False, features_only=True, out_indices=(2,))
        self.stride = self.backbone.feature_info.reduction()[-1]
        channels = self.backbone.feature_info.channels()[-1]
        self.head = nn.Sequential(nn.Linear(channels * 4 + 5, 128), nn.ReLU(), nn.Linear(128, 1))

    def forward(self, images: Tensor, boxes: Tensor, valid: Tensor) -> Tensor:
        """``(B, K)`` object scores for ``boxes`` (B, K, 4) xyxy pixels; padding (``~valid``) scores -inf."""
        b, k, _ = boxes.shape
        feats = self.backbone(images)[-1]
        from torchvision.ops import roi_align  # lazily: validating params imports this module

        rois = roi_align(feats, list(boxes), output_size=2, spatial_scale=1 / self.stride, aligned=True)
        h, w = images.shape[-2:]
        geom = boxes / boxes.new_tensor([w, h, w, h])
        area = (geom[..., 2] - geom[..., 0]) * (geom[..., 3] - geom[..., 1])
        x = torch.cat([rois.flatten(1), geom.flatten(0, 1), area.reshape(-1, 1)], dim=1)
        return self.head(x).view(b, k).masked_fill(~valid, float("-inf"))


def train_image_only(train: Split, params: BaselineParams, seed: int, out_dir: Path) -> ImageOnlyRanker:
    from vlrepro.train import TrainConfig, fit

    torch.manual_seed(seed)  # the initial weights too: a fresh process's default torch seed is random
    model = ImageOnlyRanker(params.image_only_model)
    cfg = TrainConfig(
        steps=params.image_only_steps, batch_size=params.image_only_batch_size, lr=params.image_only_lr,
        weight_decay=1e-4, schedule="cosine", warmup_steps=params.image_only_steps // 10, grad_clip=1.0, seed=seed,
        ckpt_every=0,
    )

    def loss_fn(m: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        images, boxes, valid, target = batch
        return {"loss": F.cross_entropy(m(images, boxes, valid), target)}

    fit(model, ReferringScenes(train), loss_fn, cfg, out_dir)
    return model


@torch.no_grad()
def evaluate_image_only(model: ImageOnlyRanker, split: Split, threshold: float = 0.5) -> float:
    model.eval()
    data = ReferringScenes(split)
    picked = []
    # Records, not images, are scored: an image with three expressions is scored three times, which is cheap
    # here and keeps one prediction per record.
    for image_ids in data.index.split(256):  # the image of each record, 256 records at a time
        boxes = data.boxes[image_ids]
        best = model(to_tensor(data.images[image_ids]), boxes, data.valid[image_ids]).argmax(dim=1)
        picked.append(boxes[torch.arange(len(image_ids)), best])
    return acc_at_iou(torch.cat(picked), data.target_boxes, threshold)

REFERRING_SETS = ("refcoco", "refcoco+", "refcocog")
EVAL_SPLITS = ("val", "testA", "testB")


def run_blind_baselines(data_dir: Path, params: BaselineParams, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {split: {"random", "largest", "centre", "image_only"}}}`` Acc@0.5 on every referring eval split."""
    from vlrepro.data.records import load_split
    from vlrepro.train import run_dir

    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in REFERRING_SETS:
        # The ranker is cheap to retrain, so it trains in a scratch folder: a checkpoint left by an earlier
        # run on other data must never be resumed.
        with run_dir(f"image_only-{name}") as tmp:
            model = train_image_only(load_split(data_dir / name / "train"), params, seed, Path(tmp))
        out[name] = {}
        for split_name in EVAL_SPLITS:
            split = load_split(data_dir / name / split_name)
            out[name][split_name] = {**heuristic_baselines(split), "image_only": evaluate_image_only(model, split)}
    return out
