"""Box metrics for referring expression comprehension.

Acc@0.5 follows the convention we state in every report: IoU ≥ threshold, boxes xyxy in pixels of
the evaluated image (peers differ: ≥ vs >, IoU vs GIoU, normalised coordinates).
"""

from __future__ import annotations

import torch
from torch import Tensor


def paired_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of ``pred[i]`` with ``target[i]`` for xyxy boxes of shape (N, 4); (N,) result."""
    if pred.shape != target.shape or pred.shape[-1] != 4:
        raise ValueError(f"expected two (N, 4) xyxy box tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = lambda b: (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)  # noqa: E731
    union = area(pred) + area(target) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def acc_at_iou(pred: Tensor, target: Tensor, threshold: float = 0.5) -> float:
    """Share of predictions whose IoU with their target is ≥ ``threshold``."""
    if len(pred) == 0:
        raise ValueError("acc_at_iou of an empty set is undefined")
    return (paired_iou(pred.float(), target.float()) >= threshold).float().mean().item()


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
