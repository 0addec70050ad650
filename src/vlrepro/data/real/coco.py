"""COCO as records: captions in Karpathy's split (BLIP) and instances for detection (GLIP), plus box AP.

Karpathy split (``dataset_coco.json`` from ``caption_datasets.zip``)::

    {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "imgid": 0,
                 "split": "train" | "restval" | "val" | "test", "cocoid": 391895,
                 "sentences": [{"raw": "A man ...", "tokens": [...], ...}, ...]}, ...]}

``restval`` (the 30,504 val2014 images outside Karpathy's 5k val and 5k test) joins train, the convention of
BLIP, ALBEF and most captioning work since Karpathy & Fei-Fei (113,287 training images).

Instances (``instances_<subset>.json``): one detection record per image; ``coco_box_ap`` scores detections
with pycocotools' ``COCOeval``, the evaluation every COCO AP in the papers comes from.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlrepro.data.real.errors import DatasetError, image_size, read_json
from vlrepro.data.records import Record, Split

if TYPE_CHECKING:
    from pycocotools.coco import COCO

    from vlrepro.data.real.config import RealDataConfig

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def load_coco_karpathy(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    restval_into_train: bool = True,
    read_sizes: bool = False,
) -> dict[str, Split]:
    """One record per caption, split into ``{"train", "val", "test"}``.

    ``Record.image`` is ``filepath/filename`` relative to ``image_root`` (the folder holding train2014/ and
    val2014/). The JSON carries no image sizes: width = height = 0 ("unknown") unless ``read_sizes``, which
    reads every image's header under ``image_root``. ``restval_into_train=False`` drops restval instead.
    """
    path = Path(json_path)
    doc = read_json(path, "Karpathy's dataset_coco.json ({'images': [...]})")
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise DatasetError(f"{path}: expected a JSON object with an 'images' list (Karpathy's dataset_coco.json)")
    root = None if image_root is None else Path(image_root)
    if read_sizes and root is None:
        raise ValueError("read_sizes=True needs image_root (the folder holding train2014/ and val2014/)")
    out: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for k, img in enumerate(images):
        where = f"{path}: images[{k}]"
        _require(img, ("filepath", "filename", "split", "sentences", "cocoid"), where)
        split = KARPATHY_SPLITS.get(img["split"])
        if split is None:
            raise DatasetError(f"{where}: split {img['split']!r}, expected one of {sorted(KARPATHY_SPLITS)}")
        if img["split"] == "restval" and not restval_into_train:
            continue
        if not isinstance(img["sentences"], list):
            raise DatasetError(f"{where}: 'sentences' must be a list of {{'raw': ..., 'tokens': ...}}")
        rel = f"{img['filepath']}/{img['filename']}"
        width, height = image_size(root / rel, "the Karpathy JSON") if root is not None and read_sizes else (0, 0)
        for j, sent in enumerate(img["sentences"]):
            _require(sent, ("raw",), f"{where}.sentences[{j}]")
            if not isinstance(sent["raw"], str):
                raise DatasetError(f"{where}.sentences[{j}]: 'raw' must be a string, got {sent['raw']!r}")
            out[split].append(Record(
                image_id=str(img["cocoid"]),
                image=rel,
                width=width,
                height=height,
                text=sent["raw"].strip(),  # some raw captions end in spaces or newlines
                meta={"cocoid": img["cocoid"], "sent": j, "sentid": sent.get("sentid"), "karpathy_split": img["split"]},
            ))
    meta = {"dataset": "coco_karpathy", "image_root": None if root is None else str(root),
            "restval_into_train": restval_into_train}
    return {name: Split(recs, meta={**meta, "split": name}) for name, recs in out.items()}


def load_coco_instances(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    subset: str | None = None,
) -> Split:
    """One detection record per image (images without objects included, as COCOeval counts them).

    Boxes are COCO's ``[x, y, w, h]`` as xyxy; ``labels`` are COCO category ids (1..90, with gaps); crowd
    regions are kept and flagged in ``meta["iscrowd"]`` (COCOeval ignores detections on them). Boxes with
    zero width or height (a handful in COCO) cannot be xyxy records and are skipped; their count is in
    ``Split.meta["skipped_degenerate_boxes"]`` (AP is unaffected: ``coco_box_ap`` reads the JSON itself).
    ``Record.image`` is ``<subset>/<file_name>`` relative to ``image_root``, ``subset`` defaulting to the
    name in ``instances_<subset>.json`` (e.g. val2014), so one image root serves captions and detection.
    """
    path = Path(json_path)
    doc = _read_instances(path)
    if subset is None:
        m = re.fullmatch(r"instances_(\w+)\.json", path.name)
        subset = m.group(1) if m else ""
    cats = {c["id"]: c for c in doc["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in doc["images"]}
    for k, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{k}]"
        if ann["image_id"] not in by_image:
            raise DatasetError(f"{where}: image_id {ann['image_id']} is not in 'images'")
        if ann["category_id"] not in cats:
            raise DatasetError(f"{where}: category_id {ann['category_id']} is not in 'categories'")
        by_image[ann["image_id"]].append(ann)
    skipped = 0
    records = []
    for img in doc["images"]:
        boxes, labels, crowd, ann_ids = [], [], [], []
        for ann in by_image[img["id"]]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                skipped += 1
                continue
            boxes.append((x, y, x + w, y + h))
            labels.append(int(ann["category_id"]))
            crowd.append(int(ann.get("iscrowd", 0)))
            ann_ids.append(ann["id"])
        records.append(Record(
            image_id=str(img["id"]),
            image=f"{subset}/{img['file_name']}" if subset else img["file_name"],
            width=int(img["width"]),
            height=int(img["height"]),
            boxes=tuple(boxes),
            labels=tuple(labels),
            meta={"cocoid": img["id"], "iscrowd": crowd, "ann_ids": ann_ids},
        ))
    meta = {
        "dataset": "coco_instances",
        "image_root": None if image_root is None else str(image_root),
        "annotation_file": str(path),
        "categories": [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in doc["categories"]],
        "skipped_degenerate_boxes": skipped,
    }
    return Split(records, meta=meta)


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


def coco_karpathy_from_config(cfg: RealDataConfig, **kwargs) -> dict[str, Split]:
    """``load_coco_karpathy`` with ``data.real.coco_karpathy`` and ``data.real.coco_images``."""
    if cfg.coco_karpathy is None:
        raise DatasetError("data.real.coco_karpathy is not set; point it at dataset_coco.json (README: Real datasets)")
    return load_coco_karpathy(cfg.coco_karpathy, cfg.coco_images, **kwargs)


def coco_instances_from_config(cfg: RealDataConfig, **kwargs) -> Split:
    """``load_coco_instances`` with ``data.real.coco_instances`` and ``data.real.coco_images``."""
    if cfg.coco_instances is None:
        raise DatasetError("data.real.coco_instances is not set; point it at instances_<subset>.json "
                           "(README: Real datasets)")
    return load_coco_instances(cfg.coco_instances, cfg.coco_images, **kwargs)


def _require(obj: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected an object with keys {list(keys)}, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {missing}; expected {list(keys)}")


def _read_instances(path: Path) -> dict[str, Any]:
    what = "a COCO instances file ({'images': [...], 'annotations': [...], 'categories': [...]})"
    doc = read_json(path, what)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise DatasetError(f"{path}: expected {what}")
    for k, img in enumerate(doc["images"]):
        _require(img, ("id", "file_name", "width", "height"), f"{path}: images[{k}]")
    for k, ann in enumerate(doc["annotations"]):
        _require(ann, ("id", "image_id", "category_id", "bbox"), f"{path}: annotations[{k}]")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise DatasetError(f"{path}: annotations[{k}]: bbox must be [x, y, w, h], got {ann['bbox']!r}")
    for k, cat in enumerate(doc["categories"]):
        _require(cat, ("id",), f"{path}: categories[{k}]")
    return doc


def _coco(path: Path) -> COCO:
    """A pycocotools COCO of ``path``, checked first so that a bad file names itself instead of a KeyError."""
    from pycocotools.coco import COCO

    doc = _read_instances(path)
    for k, ann in enumerate(doc["annotations"]):
        _require(ann, ("area", "iscrowd"), f"{path}: annotations[{k}] (COCOeval needs them)")
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _empty_results(gt: COCO) -> COCO:
    # loadRes([]) fails on pycocotools (it inspects the first result), so build the empty result set directly.
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                   "annotations": []}
    res.createIndex()
    return res
