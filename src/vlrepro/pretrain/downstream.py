"""What pre-training buys downstream: the minimal REC model trained from pre-trained vs random encoders.

Both runs share everything (architecture, tokenizer, data order, learning rates, seed) except the initial
weights of the CNN and the text encoder. The curve is validation Acc@0.5 (IoU >= 0.5, pixel xyxy) against
the training step, evaluated before the first step and every ``eval_every`` steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from vlrepro.data.records import Split
from vlrepro.metrics.boxes import acc_at_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from vlrepro.models.backbones import CNNBackbone, images_to_tensor
from vlrepro.models.rec import RECConfig, RECModel, cell_centres
from vlrepro.models.text import TextEncoder, encode_rows, special_ids
from vlrepro.pretrain.data import pad_texts
from vlrepro.train import TrainConfig, evaluating, fit, groups_by_prefix, run_dir


class ReferringExpressions(torch.utils.data.Dataset):
    """``(image, expression ids, target box)`` per record; the box as normalised cxcywh."""

    def __init__(self, split: Split, tokenizer: Tokenizer, max_len: int, limit: int | None = None):
        records = split.records[:limit]
        self.images = torch.from_numpy(np.array(split.images))
        self.index = torch.tensor([int(r.image) for r in records])
        self.ids = encode_rows(tokenizer, [r.text for r in records], max_len)
        self.boxes_xyxy = torch.tensor([r.boxes[0] for r in records], dtype=torch.float32)
        size = torch.tensor([[r.width, r.height, r.width, r.height] for r in records], dtype=torch.float32)
        self.sizes = size
        self.targets = xyxy_to_cxcywh(self.boxes_xyxy / size)
        self.pad_id = special_ids(tokenizer)["[PAD]"]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return images_to_tensor(self.images[self.index[i]]), self.ids[i], self.targets[i]

    def collate(self, items: list[tuple[Tensor, Tensor, Tensor]]) -> dict[str, Tensor]:
        return {
            "images": torch.stack([a for a, _, _ in items]),
            **pad_texts([b for _, b, _ in items], self.pad_id),
            "boxes": torch.stack([c for _, _, c in items]),
        }


def positive_cells(boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """``(B, h*w)`` bool: the cells whose centre lies inside each (normalised cxcywh) box, and always the cell
    holding the box's centre (so that a box smaller than a cell still has one)."""
    h, w = grid
    centres = cell_centres(h, w, boxes.device)  # (h*w, 2)
    x0, y0, x1, y1 = cxcywh_to_xyxy(boxes).unsqueeze(1).unbind(-1)
    inside = (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)
    col = (boxes[:, 0] * w).long().clamp(0, w - 1)
    row = (boxes[:, 1] * h).long().clamp(0, h - 1)
    inside[torch.arange(len(boxes), device=boxes.device), row * w + col] = True
    return inside


def rec_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """One-stage detector loss. Selection: the probability mass on the cells inside the target box
    (``-log sum_pos softmax(scores)``); box: L1 + GIoU of every such cell's box, each expression weighted
    equally. The box loss never goes through the selection, so the regression learns from the first step."""
    target = batch["boxes"]
    out = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    pos = positive_cells(target, out.grid)
    cell = (out.scores.logsumexp(-1) - out.scores.masked_fill(~pos, float("-inf")).logsumexp(-1)).mean()
    weight = (pos / pos.sum(1, keepdim=True))[pos]  # each expression's positives share a weight of 1
    pred, goal = out.cell_boxes[pos], target.unsqueeze(1).expand_as(out.cell_boxes)[pos]
    l1 = ((pred - goal).abs().sum(-1) * weight).sum() / len(target)
    giou = (generalized_box_iou_loss(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(goal)) * weight).sum() / len(target)
    return {"loss": cell + l1 + giou, "cell": cell, "l1": l1, "giou": giou}


@torch.no_grad()
def evaluate_rec(model: RECModel, data: ReferringExpressions, batch: int = 256) -> float:
    """Acc@0.5 over ``data`` (IoU >= 0.5 in pixel xyxy coordinates)."""
    device = next(model.parameters()).device
    preds = []
    with evaluating(model):
        for start in range(0, len(data), batch):
            b = data.collate([data[i] for i in range(start, min(start + batch, len(data)))])
            b = {k: v.to(device) for k, v in b.items()}
            preds.append(model(b["images"], b["input_ids"], b["attention_mask"]).boxes.cpu())
    pred = cxcywh_to_xyxy(torch.cat(preds)) * data.sizes
    return acc_at_iou(pred, data.boxes_xyxy)


def build_rec(
    cnn: CNNBackbone, text: TextEncoder, dim: int, fusion_layers: int, pretrained: bool, grid_stride: int = 4
) -> RECModel:
    """A REC model of the encoders' architecture; with ``pretrained`` their weights are copied in."""
    text_cfg = dataclasses.replace(text.config, mlm_head=False)
    cfg = RECConfig(cnn=cnn.config, text=text_cfg, dim=dim, fusion_layers=fusion_layers, grid_stride=grid_stride)
    model = RECModel(cfg, text.tokenizer)
    if pretrained:
        model.load_encoders(cnn, text)
    return model


def train_rec_curve(
    model: RECModel,
    train: ReferringExpressions,
    val: ReferringExpressions,
    cfg: TrainConfig,
    encoder_lr: float,
) -> list[dict[str, float]]:
    """Train ``model`` with ``fit``; return ``[{"step", "acc"}]``, step 0 being the model as given."""
    points = [{"step": 0, "acc": evaluate_rec(model, val)}]
    groups = groups_by_prefix(model, {"cnn.": encoder_lr, "text.": encoder_lr})
    with run_dir("rec_curve") as tmp:
        result = fit(
            model, train, rec_loss, cfg, tmp, evaluate=lambda m: {"val_acc": evaluate_rec(m, val)},
            param_groups=groups, collate_fn=train.collate,
        )  # fmt: skip
    points += [{"step": int(r["step"]), "acc": float(r["val_acc"])} for r in result.history if "val_acc" in r]
    return points
