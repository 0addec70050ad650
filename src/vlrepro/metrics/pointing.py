"""Pointing game and proposal ranking: how well a heatmap localises the phrase it explains.

- **Pointing game** (as the AMC card states it): take the arg-max pixel of the heatmap, at image
  resolution; it is a hit when its centre ``(x + 0.5, y + 0.5)`` lies *strictly* inside a ground-truth box
  (``x0 < x < x1`` and ``y0 < y < y1``; pixel xyxy, right/bottom exclusive as everywhere in vlrepro). A
  phrase with several boxes (Flickr30k Entities) is a hit if the point is inside any of them. Ties in the
  arg-max go to the first pixel in row-major order (torch's ``argmax``), so a flat map points at (0, 0).
- **Centre-point control**: the pointing game of a constant point, the centre of the image's centre pixel
  (column ``W // 2``, row ``H // 2``, i.e. what an arg-max at that pixel gives), under the same hit rule.
  Objects cluster towards the middle of most images; a heatmap that scores no better than this point has
  not localised anything.
- **Proposal ranking** (ALBEF's grounding protocol): score each proposal box by the heat inside it divided
  by ``sqrt(area)``, take the best; correct if its IoU with a ground-truth box is ≥ 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vlrepro.metrics.boxes import paired_iou

Box = Sequence[float]


def point_in_boxes(x: float, y: float, boxes: Sequence[Box]) -> bool:
    """Whether ``(x, y)`` lies strictly inside at least one xyxy box (a point on an edge is a miss)."""
    return any(x0 < x < x1 and y0 < y < y1 for x0, y0, x1, y1 in boxes)


def argmax_points(heat: Tensor) -> Tensor:
    """``(B, H, W)`` heatmaps -> ``(B, 2)`` float ``(x, y)`` centres of their arg-max pixels."""
    if heat.dim() != 3:
        raise ValueError(f"expected (B, H, W) heatmaps, got shape {tuple(heat.shape)}")
    w = heat.shape[-1]
    idx = heat.flatten(1).argmax(1)
    return torch.stack([(idx % w).float() + 0.5, torch.div(idx, w, rounding_mode="floor").float() + 0.5], dim=1)


def pointing_hits(heat: Tensor, boxes: Sequence[Sequence[Box]]) -> list[bool]:
    """One hit/miss per heatmap; ``boxes[i]`` are sample i's ground-truth boxes in the heatmap's pixels."""
    if len(boxes) != len(heat):
        raise ValueError(f"{len(heat)} heatmaps but {len(boxes)} box lists")
    if any(len(b) == 0 for b in boxes):
        raise ValueError("every sample needs at least one ground-truth box")
    points = argmax_points(heat).tolist()
    return [point_in_boxes(x, y, b) for (x, y), b in zip(points, boxes, strict=True)]


def centre_point(height: int, width: int) -> tuple[float, float]:
    """``(x, y)`` of the centre of the image's centre pixel: exactly the image centre for odd sizes, half a
    pixel right of and below it for even ones (a point on pixel edges would miss every box it touches)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width}: need at least one pixel")
    return width // 2 + 0.5, height // 2 + 0.5


def centre_hits(height: int, width: int, boxes: Sequence[Sequence[Box]]) -> list[bool]:
    """The centre-point control: one hit/miss per sample, the point ``centre_point`` scored like
    ``pointing_hits`` (strictly inside any of the sample's boxes)."""
    if any(len(b) == 0 for b in boxes):
        raise ValueError("every sample needs at least one ground-truth box")
    x, y = centre_point(height, width)
    return [point_in_boxes(x, y, b) for b in boxes]


def pointing_accuracy(heat: Tensor, boxes: Sequence[Sequence[Box]]) -> float:
    hits = pointing_hits(heat, boxes)
    if not hits:
        raise ValueError("pointing accuracy of an empty set is undefined")
    return sum(hits) / len(hits)


def box_heat_scores(heat: Tensor, proposals: Tensor) -> Tensor:
    """``(H, W)`` heatmap, ``(P, 4)`` pixel xyxy proposals -> ``(P,)`` heat inside each / sqrt(area).

    "Inside" = pixels whose centre lies in the box, the same rule as the pointing game (a box smaller than
    a pixel holds none and scores 0).
    """
    h, w = heat.shape
    ys = torch.arange(h, dtype=heat.dtype, device=heat.device) + 0.5
    xs = torch.arange(w, dtype=heat.dtype, device=heat.device) + 0.5
    x0, y0, x1, y1 = (v.view(-1, 1, 1) for v in proposals.to(heat.dtype).unbind(-1))
    rows = (ys.view(1, -1, 1) > y0) & (ys.view(1, -1, 1) < y1)
    inside = rows & (xs.view(1, 1, -1) > x0) & (xs.view(1, 1, -1) < x1)
    area = ((x1 - x0) * (y1 - y0)).view(-1).clamp(min=1e-12)
    return (heat.unsqueeze(0) * inside).flatten(1).sum(1) / area.sqrt()


def proposal_hit(heat: Tensor, proposals: Sequence[Box], targets: Sequence[Box], iou: float = 0.5) -> bool:
    """ALBEF-style: the best-scoring proposal has IoU ≥ ``iou`` with one of the ``targets``."""
    if not proposals or not targets:
        raise ValueError("proposal ranking needs at least one proposal and one target box")
    props = torch.tensor(proposals, dtype=torch.float32)
    best = props[int(box_heat_scores(heat.float(), props).argmax())]
    tg = torch.tensor(targets, dtype=torch.float32)
    return bool((paired_iou(best.expand_as(tg), tg) >= iou).any())
