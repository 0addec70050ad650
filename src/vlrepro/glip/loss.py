"""GLIP's training targets and loss on a token grid.

Assignment (anchor-free, FCOS-style with centre sampling, instead of the reference code's ATSS over
anchors): a grid cell is positive for a ground-truth box when the cell centre lies inside the box and within
``radius`` cells of the box centre; a cell claimed by several boxes takes the smallest. A positive cell's
alignment target is the box class's row of the prompt's positive map: every token of the class name.

Loss = token-level sigmoid focal loss (normalised by the positive cells) + ``box_weight`` × GIoU loss
weighted by the centerness targets + centerness BCE, as GLIP's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from vlrepro.glip.model import GLIPOutput
from vlrepro.losses.focal import token_focal_loss


@dataclass
class Targets:
    assigned: Tensor  # (B, N) index of the box a cell is positive for, -1 for background
    tokens: Tensor  # (B, N, L) float 0/1 alignment targets
    boxes: Tensor  # (B, N, 4) the assigned box (grid units; zeros at background)
    centerness: Tensor  # (B, N) centerness of the cell inside its box (zeros at background)


def assign(
    gt_boxes: Sequence[Tensor], gt_classes: Sequence[Tensor], class_maps: Sequence[Tensor], grid: tuple[int, int],
    max_len: int, radius: float = 1.5,
) -> Targets:
    """Per image: ``gt_boxes`` (n, 4) x1y1x2y2 in grid units, ``gt_classes`` (n,) rows of that image's
    ``class_maps`` (C, L) (``prompts.positive_map``; tokens beyond ``max_len`` cut)."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cx, cy = xs.flatten().float() + 0.5, ys.flatten().float() + 0.5  # (N,)
    b, n, m = len(gt_boxes), h * w, max((len(bx) for bx in gt_boxes), default=0)
    if m == 0:  # no object in the batch: every cell is background
        return Targets(torch.full((b, n), -1), torch.zeros(b, n, max_len), torch.zeros(b, n, 4), torch.zeros(b, n))
    # the batch's boxes padded to m per image, so that every image is assigned at once (a Python loop over
    # images was 3 % of a training step)
    bx, valid, rows = torch.zeros(b, m, 4), torch.zeros(b, m, dtype=torch.bool), torch.zeros(b, m, max_len)
    for i, (boxes_i, cls, cmap) in enumerate(zip(gt_boxes, gt_classes, class_maps, strict=True)):
        k = len(boxes_i)
        bx[i, :k], valid[i, :k] = boxes_i.float(), True
        rows[i, :k, : cmap.shape[1]] = cmap[cls, :max_len].float()
    x, y = cx[None, :, None], cy[None, :, None]  # (1, N, 1) against (B, 1, M)
    x1, y1, x2, y2 = (bx[:, None, :, j] for j in range(4))
    inside = (x > x1) & (x < x2) & (y > y1) & (y < y2)
    near = ((x - (x1 + x2) / 2).abs() <= radius) & ((y - (y1 + y2) / 2).abs() <= radius)
    area = ((x2 - x1) * (y2 - y1)).expand(-1, n, -1)
    cost = torch.where(inside & near & valid[:, None, :], area, torch.full_like(area, float("inf")))
    best_cost, best = cost.min(2)  # (B, N): the smallest box that claims the cell (the first of equals)
    pos = torch.isfinite(best_cost)
    image = torch.arange(b)[:, None]
    assigned = torch.where(pos, best, -1)
    tokens = rows[image, best] * pos[..., None]
    boxes = bx[image, best] * pos[..., None]
    left, top = cx - boxes[..., 0], cy - boxes[..., 1]
    right, bottom = boxes[..., 2] - cx, boxes[..., 3] - cy
    centre = torch.where(pos, torch.sqrt(torch.minimum(left, right) / torch.maximum(left, right)
                                         * torch.minimum(top, bottom) / torch.maximum(top, bottom)), 0.0)  # fmt: skip
    return Targets(assigned, tokens, boxes, centre)


def glip_loss(out: GLIPOutput, targets: Targets, token_mask: Tensor, box_weight: float = 2.0) -> dict[str, Tensor]:
    """``{"loss", "align", "box", "centerness"}``; ``token_mask`` (B, L) True at real prompt tokens."""
    pos = targets.assigned >= 0
    num_pos = float(pos.sum())
    logits = out.logits.masked_fill(~token_mask[:, None, :], 0.0)  # padding: excluded by the mask, kept finite
    align = token_focal_loss(logits, targets.tokens, token_mask, num_pos)
    if pos.any():
        weight = targets.centerness[pos]
        giou = generalized_box_iou_loss(out.boxes[pos], targets.boxes[pos], reduction="none")
        box = (giou * weight).sum() / weight.sum().clamp(min=1e-6)
        centerness = F.binary_cross_entropy_with_logits(out.centerness[pos], targets.centerness[pos])
    else:  # no object in the batch: nothing to regress, keep the graph
        box = centerness = out.boxes.sum() * 0.0
    return {"loss": align + box_weight * box + centerness, "align": align, "box": box, "centerness": centerness}
