"""Blind baselines for the referring sets: how far one gets without reading the expression.

- ``random``: a scene object picked uniformly at random — reported as its expectation (the share of the
  scene's objects that would count as a hit), so it needs no sampling. This assumes perfect object
  proposals, an upper bound on a random *box*.
- ``largest`` / ``centre``: the scene's largest object / the one whose box centre is nearest the image
  centre (RefCOCO's classic priors).
- ``image_only``: a CNN (timm ResNet) trained to regress the target box from the image alone. It can learn
  every prior of the data except the text, so it bounds what a grounding model gets "for free".

A referring task that needs both modalities keeps all of these well under what a grounding model reaches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from vlrepro.config import Section
from vlrepro.data.records import Split
from vlrepro.metrics.boxes import acc_at_iou, cxcywh_to_xyxy, paired_iou, xyxy_to_cxcywh


class BaselineParams(Section):
    image_only_steps: int = Field(300, ge=1, description="training steps of the image-only regressor")
    image_only_batch_size: int = Field(64, ge=1)
    image_only_lr: float = Field(1e-3, gt=0)
    image_only_model: str = Field("resnet10t", description="timm architecture name")


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


class ReferringImages(torch.utils.data.Dataset):
    """(image, normalised cxcywh target box) pairs of a referring split; the text is dropped on purpose."""

    def __init__(self, split: Split):
        self.images = torch.from_numpy(np.asarray(split.images))  # (N, H, W, 3) uint8, loaded once
        self.index = torch.tensor([r.image for r in split.records])
        size = torch.tensor([[r.width, r.height, r.width, r.height] for r in split.records], dtype=torch.float32)
        self.boxes = xyxy_to_cxcywh(torch.tensor([r.boxes[0] for r in split.records]) / size)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return to_tensor(self.images[self.index[i]]), self.boxes[i]


def to_tensor(images: Tensor) -> Tensor:
    """uint8 HWC (or NHWC) → float CHW in [-1, 1]."""
    return images.movedim(-1, -3).float().div(127.5).sub(1.0)


class ImageOnlyRegressor(nn.Module):
    """A timm CNN with a 4-way sigmoid head: normalised (cx, cy, w, h) from pixels alone."""

    def __init__(self, arch: str = "resnet10t"):
        super().__init__()
        import timm

        self.net = timm.create_model(arch, pretrained=False, num_classes=4)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).sigmoid()


def box_regression_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 + GIoU on normalised cxcywh boxes (the usual REC regression loss)."""
    giou = generalized_box_iou_loss(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target), reduction="mean")
    return F.l1_loss(pred, target) + giou


def train_image_only(train: Split, params: BaselineParams, seed: int, out_dir: Path) -> ImageOnlyRegressor:
    from vlrepro.train import TrainConfig, fit

    model = ImageOnlyRegressor(params.image_only_model)
    cfg = TrainConfig(
        steps=params.image_only_steps, batch_size=params.image_only_batch_size, lr=params.image_only_lr,
        weight_decay=1e-4, schedule="cosine", warmup_steps=params.image_only_steps // 10, grad_clip=1.0, seed=seed,
        ckpt_every=max(params.image_only_steps // 2, 1),
    )

    def loss_fn(m: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        images, boxes = batch
        return {"loss": box_regression_loss(m(images), boxes)}

    fit(model, ReferringImages(train), loss_fn, cfg, out_dir)
    return model


@torch.no_grad()
def evaluate_image_only(model: ImageOnlyRegressor, split: Split, threshold: float = 0.5) -> float:
    model.eval()
    data = ReferringImages(split)
    preds = torch.cat([model(to_tensor(data.images[data.index[i : i + 256]])) for i in range(0, len(data), 256)])
    size = torch.tensor([[r.width, r.height, r.width, r.height] for r in split.records], dtype=torch.float32)
    targets = torch.tensor([r.boxes[0] for r in split.records])
    return acc_at_iou(cxcywh_to_xyxy(preds) * size, targets, threshold)


REFERRING_SETS = ("refcoco", "refcoco+", "refcocog")
EVAL_SPLITS = ("val", "testA", "testB")


def run_blind_baselines(data_dir: Path, params: BaselineParams, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {split: {"random", "largest", "centre", "image_only"}}}`` Acc@0.5 on every referring eval split."""
    import tempfile

    from vlrepro.data.records import load_split

    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in REFERRING_SETS:
        # The regressor is cheap to retrain, so it trains in a scratch folder: a checkpoint left by an earlier
        # run on other data must never be resumed.
        with tempfile.TemporaryDirectory(prefix=f"image_only_{name}_") as tmp:
            model = train_image_only(load_split(data_dir / name / "train"), params, seed, Path(tmp))
        out[name] = {}
        for split_name in EVAL_SPLITS:
            split = load_split(data_dir / name / split_name)
            out[name][split_name] = {**heuristic_baselines(split), "image_only": evaluate_image_only(model, split)}
    return out
