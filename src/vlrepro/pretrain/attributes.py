"""Detection-style pre-training of the vision backbones: what is where in the scene, from the scene graph.

Two heads on one backbone, both dropped after pre-training:

- dense (a one-stage detector's classification and regression branches): each cell of the
  stride-``grid_stride`` grid is labelled with the category, colour, pattern and size of the object
  covering it (or background), from the instance maps, and regresses that object's box. All backbone
  stages are resized to that grid and concatenated, so every stage a later model reads (SMCIM uses the
  last three) receives a localised signal;
- scene: multi-label "which categories / colours / patterns / sizes are present", on the pooled feature
  (the CNN's last stage, the ViT's [CLS] token — the token CLIP later projects).

Metrics on held-out images: ``map`` (scene head, mean average precision over the labels), ``cell_acc``
(dense head, accuracy on the cells covered by an object, averaged over the four attributes) and
``box_acc`` (share of object cells whose box has IoU >= 0.5 with their object's).
With ``hold_out_novel`` the novel detection categories get no category label anywhere (ignored in the
loss and the metrics), as COCO/O365 pre-training knows nothing of GLIP's zero-shot classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from vlrepro.metrics.boxes import acc_at_iou, cxcywh_to_xyxy
from vlrepro.models.backbones import CNNBackbone, ViTBackbone, images_to_tensor
from vlrepro.models.rec import decode_cell_boxes, resize_to_grid
from vlrepro.pretrain.data import SceneImages
from vlrepro.train import evaluating

GROUPS = ("category", "colour", "pattern", "size")
IGNORE = -100
OBJECT_COVER = 0.4  # a cell belongs to an object that covers at least this share of it
BACKGROUND_COVER = 0.9  # ... to the background if that covers this much; anything between is ignored


@dataclass(frozen=True)
class AttributeSpace:
    """The attribute values of each group (from a split's meta) and the (group, value) pairs left unlabelled."""

    values: dict[str, tuple[str, ...]]
    unlabelled: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_meta(cls, meta: dict, hold_out_novel: bool = True) -> AttributeSpace:
        cats = meta["categories"]
        values = {
            "category": tuple(c["name"] for c in cats),
            "colour": tuple(meta["colours"]),
            "pattern": tuple(meta["patterns"]),
            "size": tuple(meta["sizes"]),
        }
        novel = frozenset(("category", c["name"]) for c in cats if c["novel"]) if hold_out_novel else frozenset()
        return cls(values, novel)

    @property
    def labels(self) -> list[tuple[str, str]]:
        """Flat (group, value) list: the columns of the scene head."""
        return [(g, v) for g in GROUPS for v in self.values[g]]

    @property
    def classes_per_group(self) -> list[int]:
        return [len(self.values[g]) + 1 for g in GROUPS]  # + background

    def label_mask(self) -> Tensor:
        return torch.tensor([lab not in self.unlabelled for lab in self.labels])


def _object_tables(data: SceneImages, space: AttributeSpace) -> tuple[np.ndarray, np.ndarray]:
    """``(N, G, 1 + K)`` class of scene object k-1 per group (column 0: background = 0) and ``(N, 1 + K, 4)``
    its box as normalised cxcywh (row 0: zeros)."""
    k = max(len(s) for s in data.scenes)
    size = float(data.image_size)
    labels = np.zeros((len(data.scenes), len(GROUPS), k + 1), dtype=np.int64)
    boxes = np.zeros((len(data.scenes), k + 1, 4), dtype=np.float32)
    for n, scene in enumerate(data.scenes):
        for obj in scene:
            j = obj["mask_id"] + 1
            x0, y0, x1, y1 = (v / size for v in obj["box"])
            boxes[n, j] = ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)
            for g, group in enumerate(GROUPS):
                value = obj[group]
                labels[n, g, j] = IGNORE if (group, value) in space.unlabelled else space.values[group].index(value) + 1
    return labels, boxes


def dense_targets(data: SceneImages, space: AttributeSpace, stride: int, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Per cell of the stride-``stride`` grid: ``(N, G, h, w)`` int64 labels (0 background, c+1 value c, IGNORE
    mixed or unlabelled) and ``(N, 4, h, w)`` the owning object's box (normalised cxcywh; zeros off objects)."""
    labels_np, boxes_np = _object_tables(data, space)
    table, box_table = torch.from_numpy(labels_np), torch.from_numpy(boxes_np)
    k1 = table.shape[-1]
    labels_out, boxes_out = [], []
    for start in range(0, len(data.instances), chunk):
        inst = torch.from_numpy(np.asarray(data.instances[start : start + chunk])).long().clamp(max=k1 - 1)
        cover = F.avg_pool2d(F.one_hot(inst, k1).permute(0, 3, 1, 2).float(), stride)  # (n, 1+K, h, w)
        obj_cover, obj = cover[:, 1:].max(dim=1)
        owner = torch.where(obj_cover >= OBJECT_COVER, obj + 1, torch.zeros_like(obj))
        ambiguous = (obj_cover < OBJECT_COVER) & (cover[:, 0] < BACKGROUND_COVER)
        n, (h, w) = len(inst), owner.shape[1:]
        flat = owner.flatten(1)  # (n, h*w)
        labels = torch.gather(table[start : start + n], 2, flat.unsqueeze(1).expand(-1, len(GROUPS), -1))
        labels_out.append(labels.view(n, len(GROUPS), h, w).masked_fill(ambiguous.unsqueeze(1), IGNORE))
        boxes = torch.gather(box_table[start : start + n], 1, flat.unsqueeze(-1).expand(-1, -1, 4))
        boxes_out.append(boxes.transpose(1, 2).reshape(n, 4, h, w))
    return torch.cat(labels_out), torch.cat(boxes_out)


def presence_targets(data: SceneImages, space: AttributeSpace) -> Tensor:
    """``(N, L)`` float: 1 where the scene holds an object with that (group, value)."""
    index = {lab: i for i, lab in enumerate(space.labels)}
    out = torch.zeros(len(data.scenes), len(index))
    for n, scene in enumerate(data.scenes):
        for obj in scene:
            for group in GROUPS:
                out[n, index[(group, obj[group])]] = 1.0
    return out


class AttributeImages(torch.utils.data.Dataset):
    """``(image, cell labels, cell boxes, presence)``; a random horizontal flip (no attribute changes under it)."""

    def __init__(self, data: SceneImages, space: AttributeSpace, stride: int, augment: bool = True):
        self.images = torch.from_numpy(np.ascontiguousarray(data.images))
        self.dense, self.boxes = dense_targets(data, space, stride)
        self.presence = presence_targets(data, space)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        image, dense, boxes = images_to_tensor(self.images[i]), self.dense[i], self.boxes[i]
        if self.augment and np.random.random() < 0.5:  # np.random is seeded per sample by the training loop
            image, dense, boxes = image.flip(-1), dense.flip(-1), boxes.flip(-1).clone()
            boxes[0] = torch.where(boxes[2] > 0, 1 - boxes[0], boxes[0])  # mirrored centres, on objects only
        return image, dense, boxes, self.presence[i]


class DenseAttributeHead(nn.Module):
    """Feature maps -> resized to one grid, concatenated -> per cell: logits of every group and a box
    (a one-stage detector's classification and regression branches, sharing one hidden layer)."""

    def __init__(self, channels: int, classes: list[int], hidden: int = 128, max_offset: float = 3.0):
        super().__init__()
        self.classes, self.max_offset = classes, max_offset
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, sum(classes) + 4, 1))

    def forward(self, maps: list[Tensor], grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``(logits (B, sum(classes), h, w), boxes (B, 4, h, w) normalised cxcywh)``."""
        out = self.net(resize_to_grid(maps, grid))
        logits, raw = out[:, : sum(self.classes)], out[:, sum(self.classes) :]
        boxes = decode_cell_boxes(raw.flatten(2).transpose(1, 2), grid, self.max_offset)
        return logits, boxes.transpose(1, 2).reshape(raw.shape)


class AttributeModel(nn.Module):
    """A backbone with the attribute heads: ``forward(images) -> (cell logits, cell boxes, scene logits)``."""

    def __init__(self, backbone: CNNBackbone | ViTBackbone, space: AttributeSpace, grid_stride: int):
        super().__init__()
        self.backbone = backbone
        self.grid_stride = grid_stride
        if isinstance(backbone, ViTBackbone):
            channels, pooled = backbone.embed_dim, backbone.embed_dim
        else:
            channels, pooled = sum(backbone.channels), backbone.channels[-1]
        self.dense = DenseAttributeHead(channels, space.classes_per_group)
        self.scene = nn.Linear(pooled, len(space.labels))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if isinstance(self.backbone, ViTBackbone):
            tokens = self.backbone(images)
            maps = [self.backbone.patch_grid(tokens)]
            pooled = self.backbone.pool(tokens)
        else:
            maps = self.backbone(images)
            pooled = maps[-1].mean((2, 3))
        grid = (images.shape[-2] // self.grid_stride, images.shape[-1] // self.grid_stride)
        logits, boxes = self.dense(maps, grid)
        return logits, boxes, self.scene(pooled)


def attribute_loss(
    model: nn.Module, batch: tuple[Tensor, Tensor, Tensor, Tensor], classes: list[int], label_mask: Tensor
) -> dict[str, Tensor]:
    """Cell cross-entropies (mean over groups) + cell box L1 + GIoU on object cells + the scene BCE."""
    images, dense, boxes, presence = batch
    dense_logits, pred_boxes, scene_logits = model(images)
    per_group = dense_logits.split(classes, dim=1)
    # Background covers most cells; averaging object and background cells separately keeps the attributes of
    # the (few) object cells from drowning in "nothing here".
    on_object, on_background = dense[:, -1] > 0, dense[:, -1] == 0  # size: the one group never left unlabelled
    terms = []
    for g, lg in enumerate(per_group):
        ce = F.cross_entropy(lg, dense[:, g], ignore_index=IGNORE, reduction="none")
        valid = dense[:, g] != IGNORE
        terms.append(_masked_mean(ce, on_object & valid) + _masked_mean(ce, on_background))
    dense_loss = torch.stack(terms).mean() / 2
    pred = pred_boxes.permute(0, 2, 3, 1)[on_object]
    target = boxes.permute(0, 2, 3, 1)[on_object]
    if len(target):
        box_loss = (pred - target).abs().sum(-1).mean() + generalized_box_iou_loss(
            cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target), reduction="mean"
        )
    else:
        box_loss = pred_boxes.sum() * 0.0
    mask = label_mask.to(scene_logits.device)
    scene_loss = F.binary_cross_entropy_with_logits(scene_logits[:, mask], presence[:, mask])
    return {"loss": dense_loss + box_loss + scene_loss, "dense": dense_loss, "box": box_loss, "scene": scene_loss}


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per column of ``(N, L)`` scores: AP = mean precision at the ranks of the positives (NaN without any)."""
    order = scores.argsort(dim=0, descending=True)
    hits = targets.gather(0, order)
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, device=hits.device).unsqueeze(1)
    positives = hits.sum(0)
    return (precision * hits).sum(0) / positives.where(positives > 0, torch.tensor(float("nan")))


@torch.no_grad()
def evaluate_attributes(model: AttributeModel, data: AttributeImages, label_mask: Tensor, batch: int = 256) -> dict:
    """``{"map", "cell_acc", "box_acc"}`` on ``data`` (no augmentation): scene-head mAP; object-cell accuracy
    (mean over the groups); share of object cells whose box has IoU >= 0.5 with their object's."""
    device = next(model.parameters()).device
    scene, dense, boxes = [], [], []
    with evaluating(model):
        for start in range(0, len(data), batch):
            images = images_to_tensor(data.images[start : start + batch]).to(device)
            d, b, s = model(images)
            scene.append(s.sigmoid().cpu())
            dense.append(d.cpu())
            boxes.append(b.cpu())
    scene_scores, dense_logits, pred_boxes = torch.cat(scene), torch.cat(dense), torch.cat(boxes)
    ap = average_precision(scene_scores[:, label_mask], data.presence[:, label_mask])
    on_object = data.dense[:, -1] > 0
    if not on_object.any():
        raise ValueError(f"no object cells among the {len(data)} evaluation images; raise pretrain.eval_images")
    accs = []
    for g, lg in enumerate(dense_logits.split(model.dense.classes, dim=1)):
        target = data.dense[:, g]
        labelled = target > 0  # the category group has no label on novel categories' cells
        if labelled.any():
            accs.append((lg.argmax(1)[labelled] == target[labelled]).float().mean())
    pred = cxcywh_to_xyxy(pred_boxes.permute(0, 2, 3, 1)[on_object])
    box_acc = acc_at_iou(pred, cxcywh_to_xyxy(data.boxes.permute(0, 2, 3, 1)[on_object]))
    return {"map": float(ap.nanmean()), "cell_acc": float(torch.stack(accs).mean()), "box_acc": box_acc}
