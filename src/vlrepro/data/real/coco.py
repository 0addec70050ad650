"""COCO as records: captions in Karpathy's split (BLIP) and instances for detection (GLIP).

Karpathy split (``dataset_coco.json`` from ``caption_datasets.zip``)::

    {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "imgid": 0,
                 "split": "train" | "restval" | "val" | "test", "cocoid": 391895,
                 "sentences": [{"raw": "A man ...", "tokens": [...], ...}, ...]}, ...]}

``restval`` (the 30,504 val2014 images outside Karpathy's 5k val and 5k test) joins train, the convention of
BLIP, ALBEF and most captioning work since Karpathy & Fei-Fei (113,287 training images).

Instances (``instances_<subset>.json``): one detection record per image. ``labels`` are the raw COCO
category ids (1..90, with gaps: 80 categories), not contiguous 0..79 indices; ``Split.meta["categories"]``
maps them to names. Crowd regions (``iscrowd=1``) are not objects to detect: ``boxes``/``labels`` hold
the non-crowd objects only, and the crowd regions go to ``meta["crowd_boxes"]`` (xyxy) and
``meta["crowd_labels"]``. Box AP is :func:`vlrepro.metrics.coco.coco_box_ap`, which reads the instances
file itself (pycocotools' ``COCOeval``, crowd handling included).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlrepro.data.real.errors import DatasetError, image_size, not_set, read_json, require_keys
from vlrepro.data.records import Record, Split, xywh_to_xyxy

if TYPE_CHECKING:
    from vlrepro.data.real.config import RealDataConfig

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


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
        require_keys(img, ("filepath", "filename", "split", "sentences", "cocoid"), where)
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
            require_keys(sent, ("raw",), f"{where}.sentences[{j}]")
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

    Boxes are COCO's ``[x, y, w, h]`` as xyxy; ``labels`` are the raw COCO category ids (1..90, with gaps).
    Only non-crowd objects are in ``boxes``/``labels`` (``meta["ann_ids"]`` gives their annotation ids);
    crowd regions (``iscrowd=1``) are in ``meta["crowd_boxes"]`` (xyxy lists), ``meta["crowd_labels"]`` and
    ``meta["crowd_ann_ids"]``, so that a training loss need not treat a crowd as one object and an
    evaluation can ignore detections on it, as COCOeval does. Boxes with zero width or height (a handful in
    COCO) cannot be xyxy records and are skipped; their count is in ``Split.meta["skipped_degenerate_boxes"]``
    (AP is unaffected: ``vlrepro.metrics.coco.coco_box_ap`` reads the JSON itself). ``Record.image`` is
    ``<subset>/<file_name>`` relative to ``image_root``, ``subset`` defaulting to the name in
    ``instances_<subset>.json`` (e.g. val2014), so one image root serves captions and detection.
    """
    path = Path(json_path)
    doc = read_instances(path)
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
        boxes, labels, ann_ids = [], [], []
        crowd_boxes, crowd_labels, crowd_ann_ids = [], [], []
        for ann in by_image[img["id"]]:
            x, y, w, h = ann["bbox"]
            if w <= 0 or h <= 0:
                skipped += 1
                continue
            if ann.get("iscrowd", 0):
                crowd_boxes.append(list(xywh_to_xyxy(x, y, w, h)))  # lists: meta survives a JSON round trip
                crowd_labels.append(int(ann["category_id"]))
                crowd_ann_ids.append(ann["id"])
                continue
            boxes.append(xywh_to_xyxy(x, y, w, h))
            labels.append(int(ann["category_id"]))
            ann_ids.append(ann["id"])
        records.append(Record(
            image_id=str(img["id"]),
            image=f"{subset}/{img['file_name']}" if subset else img["file_name"],
            width=int(img["width"]),
            height=int(img["height"]),
            boxes=tuple(boxes),
            labels=tuple(labels),
            meta={"cocoid": img["id"], "ann_ids": ann_ids, "crowd_boxes": crowd_boxes,
                  "crowd_labels": crowd_labels, "crowd_ann_ids": crowd_ann_ids},
        ))
    meta = {
        "dataset": "coco_instances",
        "image_root": None if image_root is None else str(image_root),
        "annotation_file": str(path),
        "categories": [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in doc["categories"]],
        "skipped_degenerate_boxes": skipped,
    }
    return Split(records, meta=meta)


def coco_karpathy_from_config(cfg: RealDataConfig, **kwargs) -> dict[str, Split]:
    """``load_coco_karpathy`` with ``data.real.coco_karpathy`` and ``data.real.coco_images``."""
    if cfg.coco_karpathy is None:
        raise not_set("coco_karpathy", "Karpathy's dataset_coco.json")
    return load_coco_karpathy(cfg.coco_karpathy, cfg.coco_images, **kwargs)


def coco_instances_from_config(cfg: RealDataConfig, key: str = "coco_instances", **kwargs) -> Split:
    """``load_coco_instances`` with ``data.real.<key>`` (``coco_instances``, or ``coco_instances_train``) and
    ``data.real.coco_images``."""
    path = getattr(cfg, key)
    if path is None:
        raise not_set(key, "a COCO instances_<subset>.json")
    return load_coco_instances(path, cfg.coco_images, **kwargs)


def read_instances(path: Path) -> dict[str, Any]:
    """The instances JSON, checked: images, annotations (with an ``[x, y, w, h]`` bbox) and categories."""
    what = "a COCO instances file ({'images': [...], 'annotations': [...], 'categories': [...]})"
    doc = read_json(path, what)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise DatasetError(f"{path}: expected {what}")
    for k, img in enumerate(doc["images"]):
        require_keys(img, ("id", "file_name", "width", "height"), f"{path}: images[{k}]")
    for k, ann in enumerate(doc["annotations"]):
        require_keys(ann, ("id", "image_id", "category_id", "bbox"), f"{path}: annotations[{k}]")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise DatasetError(f"{path}: annotations[{k}]: bbox must be [x, y, w, h], got {ann['bbox']!r}")
    for k, cat in enumerate(doc["categories"]):
        require_keys(cat, ("id",), f"{path}: categories[{k}]")
    return doc
