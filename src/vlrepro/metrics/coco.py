"""COCO box AP with pycocotools' ``COCOeval``, the evaluation every COCO AP in the papers comes from.

The ground truth is a COCO instances file (``instances_<subset>.json``), read and checked by the COCO
adapter (:func:`vlrepro.data.real.coco.read_instances`) so that a malformed file names itself instead of
failing with a KeyError inside pycocotools. Crowd regions stay in the ground truth: COCOeval ignores
detections matched to them, as in the official evaluation.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlrepro.data.real.coco import read_instances
from vlrepro.data.real.errors import require_keys

if TYPE_CHECKING:
    from pycocotools.coco import COCO

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_box_ap(gt_json_path: str | Path, detections: list[dict[str, Any]]) -> dict[str, float]:
    """COCO box AP of ``detections`` against the instances file ``gt_json_path`` (pycocotools ``COCOeval``).

    ``detections``: COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
    Returns AP (IoU .50:.05:.95), AP50, AP75, APs, APm, APl at 100 detections per image; pycocotools
    reports -1.0 for an area range without ground truth, kept as is. No detections at all give 0.0 wherever
    there is ground truth.
    """
    gt = _coco(Path(gt_json_path))
    for k, det in enumerate(detections):
        missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in det]
        if missing:
            raise ValueError(f"detections[{k}]: missing {missing}; expected image_id, category_id, bbox, score")
        if det["image_id"] not in gt.imgs:
            raise ValueError(f"detections[{k}]: image_id {det['image_id']} is not in {gt_json_path}")
        if det["category_id"] not in gt.cats:
            raise ValueError(f"detections[{k}]: category_id {det['category_id']} is not in {gt_json_path}")
        if len(det["bbox"]) != 4:
            raise ValueError(f"detections[{k}]: bbox must be [x, y, w, h], got {det['bbox']!r}")
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the summary table
        # loadRes writes area/id/iscrowd into the dicts it gets: give it copies
        dt = gt.loadRes([dict(d) for d in detections]) if detections else _empty_results(gt)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {key: float(v) for key, v in zip(AP_KEYS, ev.stats[: len(AP_KEYS)], strict=True)}


def _coco(path: Path) -> COCO:
    """A pycocotools COCO of ``path``, checked first so that a bad file names itself instead of a KeyError."""
    from pycocotools.coco import COCO

    doc = read_instances(path)
    for k, ann in enumerate(doc["annotations"]):
        require_keys(ann, ("area", "iscrowd"), f"{path}: annotations[{k}] (COCOeval needs them)")
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _empty_results(gt: COCO) -> COCO:
    # loadRes([]) fails on pycocotools (it inspects the first result), so build the empty result set directly.
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": list(gt.dataset["categories"]),
        "annotations": [],
    }
    res.createIndex()
    return res
