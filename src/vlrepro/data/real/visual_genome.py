"""Visual Genome region descriptions: one box and one short description per region.

On disk (the Visual Genome v1.2 release)::

    <root>/region_descriptions.json  [{id: image id, regions: [{region_id, image_id, phrase, x, y, width,
                                      height}, ...]}, ...]
    <root>/image_data.json           [{image_id, width, height, url, coco_id, flickr_id}, ...]
    <root>/VG_100K/<id>.jpg, <root>/VG_100K_2/<id>.jpg   the images (the url names the folder)

Visual Genome has no split for region descriptions; every region goes to ``"train"`` (AMC uses them only
as box-annotated training data). About half of its images are COCO or Flickr30k images; a record's meta keeps
their ``coco_id`` / ``flickr_id`` (where the release gives one), so that a paper's training set can leave out
the images its evaluation scores (``vlrepro.data.real.overlap``).

Boxes are ``[x, y, width, height]`` in pixels from the image's top-left edge, so (x, y, x + w, y + h) is
our right/bottom-exclusive xyxy. Many regions stick out of the image a little: they are clipped to it.
Regions with a non-positive width/height, with less than ``min_size`` pixels of width or height left
inside the image, or with an empty phrase are dropped and counted in ``Split.meta["dropped"]``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError, not_set, read_json
from vlrepro.data.records import Phrase, Record, Split, xywh_to_xyxy

IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")


def read_image_data(path: Path) -> dict[int, tuple[str, int, int, dict[str, int]]]:
    """``image_data.json`` as {image id: (file relative to the VG root, width, height, {"coco_id": id,
    "flickr_id": id} of those the image has)}."""
    doc = read_json(path, "Visual Genome's image_data.json (image metadata)")
    if not isinstance(doc, list):
        raise DatasetError(f"{path}: expected a JSON list of images, found {type(doc).__name__}")
    out = {}
    for i, img in enumerate(doc):
        where = f"{path}: [{i}]"
        image_id = _num(img, ("image_id", "id"), where, int)
        url = _get(img, ("url",), where)
        if not isinstance(url, str):
            raise DatasetError(f"{where}: url {url!r:.60} is not a string")
        parts = url.rstrip("/").split("/")
        if len(parts) < 2 or parts[-2] not in IMAGE_FOLDERS:
            folders = " or ".join(f"{f}/<file>" for f in IMAGE_FOLDERS)
            raise DatasetError(f"{where}: url {url!r:.80} does not end in {folders}")
        same = {key: _num(img, (key,), where, int) for key in ("coco_id", "flickr_id") if img.get(key) is not None}
        out[image_id] = (f"{parts[-2]}/{parts[-1]}", _num(img, ("width",), where, int),
                         _num(img, ("height",), where, int), same)
    return out


def clip_region(x: float, y: float, w: float, h: float, width: int, height: int, min_size: float
                ) -> tuple[tuple[float, float, float, float] | None, str]:
    """The region's xyxy box clipped to the image, or None with the reason it is dropped."""
    if not (w > 0 and h > 0):
        return None, "degenerate"
    box = xywh_to_xyxy(x, y, w, h)
    x0, y0, x1, y1 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height))
    if x1 <= x0 or y1 <= y0:
        return None, "outside"
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return None, "too_small"
    return (x0, y0, x1, y1), "clipped" if (x0, y0, x1, y1) != box else "ok"


def load_visual_genome(root: Path, image_root: Path | None = None, *, min_size: float = 1.0) -> dict[str, Split]:
    """Region descriptions of ``<root>`` as ``{"train": Split}``, one ``Record`` per kept region."""
    root = Path(root)
    images = read_image_data(root / "image_data.json")
    path = root / "region_descriptions.json"
    doc = read_json(path, "Visual Genome's region_descriptions.json")
    if not isinstance(doc, list):
        raise DatasetError(f"{path}: expected a JSON list of images, found {type(doc).__name__}")
    records: list[Record] = []
    counts: Counter[str] = Counter()
    for i, entry in enumerate(doc):
        where = f"{path}: [{i}]"
        image_id = _num(entry, ("id", "image_id"), where, int)
        if image_id not in images:
            raise DatasetError(f"{where}: image {image_id} is not in {root / 'image_data.json'}; both files must come "
                               "from the same Visual Genome release")
        file, width, height, same = images[image_id]
        regions = _get(entry, ("regions",), where)
        if not isinstance(regions, list):
            raise DatasetError(f"{where}: 'regions' is {type(regions).__name__}, expected a list")
        for j, region in enumerate(regions):
            rwhere = f"{where} region {j}"
            x, y, w, h = (_num(region, (k,), rwhere, float) for k in ("x", "y", "width", "height"))
            phrase = _get(region, ("phrase",), rwhere)
            text = phrase.strip() if isinstance(phrase, str) else ""
            box, status = clip_region(x, y, w, h, width, height, min_size)
            if not text:
                status, box = "empty_phrase", None
            counts[status] += 1
            if box is None:
                continue
            records.append(
                Record(
                    image_id=str(image_id),
                    image=file,
                    width=width,
                    height=height,
                    text=text,
                    boxes=(box,),
                    phrases=(Phrase(0, len(text), (0,)),),
                    meta={"region_id": _num(region, ("region_id", "id"), rwhere, int), **same},
                )
            )
    dropped = {k: counts[k] for k in ("degenerate", "outside", "too_small", "empty_phrase")}
    meta = {"dataset": "visual_genome", "split": "train", "image_root": str(image_root or root),
            "source": str(path), "n_regions": sum(counts.values()), "clipped": counts["clipped"],
            "dropped": dropped, "min_size": min_size}
    return {"train": Split(records, meta=meta)}


def visual_genome_from_config(cfg: RealDataConfig, *, min_size: float = 1.0) -> dict[str, Split]:
    """:func:`load_visual_genome` with ``data.real.visual_genome`` (images under that root)."""
    if cfg.visual_genome is None:
        raise not_set("visual_genome", "the Visual Genome root holding region_descriptions.json and image_data.json")
    return load_visual_genome(cfg.visual_genome, min_size=min_size)


def _get(d: Any, keys: tuple[str, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: expected a JSON object, found {type(d).__name__}")
    for k in keys:
        if k in d:
            return d[k]
    raise DatasetError(f"{where}: no {' or '.join(repr(k) for k in keys)}")


def _num(d: Any, keys: tuple[str, ...], where: str, kind: type) -> Any:
    value = _get(d, keys, where)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (kind is int and value != int(value)):
        expected = "an integer" if kind is int else "a number"
        raise DatasetError(f"{where}: {keys[0]!r} is {value!r:.40}, expected {expected}")
    return kind(value)
