"""GLIP on real data (``glip.source: real``, the ``paper`` profile): COCO detection, Flickr30k Entities and
Visual Genome grounding, COCO captions for the student, one ODinW dataset for the transfer, each as a split
GLIP's code reads like the world's.

``open_split`` opens the `data` stage's conversion (every image file checked first; a missing set names its
``data.real`` key) and re-expresses it:

- every image is letterboxed to ``glip.real.image_size`` (``vlrepro.data.images``): boxes are mapped into
  those input pixels, ``Record.image`` is the image's number and width = height = the input size, and
  ``meta["files"]`` keeps each number's file and size, which ``vlrepro.glip.data.split_pixels`` reads;
- detection (COCO instances, and ODinW with every class base): the categories are renumbered 0..C-1 in
  COCO id order (the code indexes class names by label), and ``glip.real.novel_categories`` (default: the
  17 novel classes of the open-vocabulary COCO split) are the novel classes, every other class base.
  Training prompts name base classes only, so the novel objects of the training images stay unlabelled
  background, as in the world's det/train.

Evaluation runs in input pixels. IoU is the same there as in the original pixels (one scale for x and y, up
to rounding), and so are AP and R@k; COCO's small/medium/large areas are measured in input pixels. Crowd
regions are mapped alike and scored as COCOeval does (a detection on one is ignored). The base/novel split
differs from OV-COCO's, which leaves 15 classes out of both. Visual Genome holds COCO images, val2017 ones
among them: a training run leaves out every grounding record of a test image (``vlrepro.data.real.overlap``),
so the novel classes' test objects stay unseen.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vlrepro.data.images import Letterbox, image_numbers, open_real_split
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.records import Split

if TYPE_CHECKING:
    from vlrepro.glip.config import GLIPParams

# GLIP's set name -> (its conversion under data/real, the data.real key(s) behind it)
REAL_SETS = {
    "det": ("coco_instances", "coco_instances"),  # train: coco_instances_train (``_DET``)
    "flickr": ("flickr30k_entities", "flickr30k_entities and flickr30k_images"),
    "vg": ("visual_genome", "visual_genome"),
    "captions": ("coco_karpathy", "coco_karpathy and coco_images"),
    "odinw": ("odinw", "odinw"),  # the transfer's new domain: every class base
}
# det split -> the glip.real key naming its subset and the data.real key converting it
_DET = {"train": ("det_train", "coco_instances_train"), "test": ("det_test", "coco_instances")}


def open_split(p: GLIPParams, data_dir: Path, name: str, split: str) -> Split:
    """Set ``name``'s ``split`` (``det``: ``train``/``test`` = ``glip.real.det_train``/``det_test``) from
    ``data_dir`` (``data/real``), checked and letterboxed (module docstring). ``odinw``: ``odinw_splits``."""
    if name not in REAL_SETS:
        raise DatasetError(f"glip.source = real: the set {name!r} has no real counterpart; real sets: "
                           f"{', '.join(REAL_SETS)}")  # fmt: skip
    folder, keys = REAL_SETS[name]
    if name == "det":
        if split not in _DET:
            raise ValueError(f"det has the splits {', '.join(_DET)}, not {split!r}")
        subset_key, keys = _DET[split]
        subset = getattr(p.real, subset_key)
        reads = f"glip.source = real reads det {split} (glip.real.{subset_key} = {subset})"
    else:
        subset, reads = split, f"glip.source = real reads {name} {split}"
    path = Path(data_dir) / folder / subset
    out = open_real_split(path, reads, keys)
    if name == "det":
        out = detection_split(out, p.real.novel_categories, str(path))
    return letterboxed(out, p.real.image_size, str(path))


def odinw_splits(p: GLIPParams, data_dir: Path) -> tuple[Split, Split]:
    """The ODinW dataset's train and test splits with one class list: the categories that have a box in either
    (a Roboflow export's background category 0 has none), every class base. Train and test must list the
    same categories; otherwise their prompts would differ and prompt tuning's offset would not fit the test."""
    folder, keys = REAL_SETS["odinw"]
    raw = {s: open_real_split(Path(data_dir) / folder / s, f"glip.source = real reads odinw {s}", keys)
           for s in ("train", "test")}  # fmt: skip
    listed = {s: sorted((c["id"], c["name"]) for c in split.meta["categories"]) for s, split in raw.items()}
    if listed["train"] != listed["test"]:
        raise DatasetError(f"{raw['train'].meta['annotation_file']} and {raw['test'].meta['annotation_file']}: the "
                           f"ODinW splits list different categories ({listed['train']} vs {listed['test']}); use "
                           f"the same annotation file kind for both (annotations_without_background.json)")  # fmt: skip
    used = {c for split in raw.values() for r in split.records for c in r.labels}
    out = []
    for s, split in raw.items():
        cats = [c for c in split.meta["categories"] if c["id"] in used]
        kept = replace(split, meta={**split.meta, "categories": cats})
        where = str(Path(data_dir) / folder / s)
        out.append(letterboxed(detection_split(kept, (), where), p.real.image_size, where))
    return out[0], out[1]


def detection_split(split: Split, novel: tuple[str, ...], where: str) -> Split:
    """COCO instances with contiguous labels 0..C-1 (COCO id order) and base/novel category ids."""
    cats = sorted(split.meta["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(cats)}
    names = [c["name"] for c in cats]
    if unknown := sorted(set(novel) - set(names)):
        raise DatasetError(f"glip.real.novel_categories names {unknown}, which are not classes of {where}; "
                           f"its classes: {', '.join(names)}")  # fmt: skip
    records = []
    for r in split.records:
        crowd = [(b, index[c]) for b, c in zip(r.meta.get("crowd_boxes", ()), r.meta.get("crowd_labels", ()),
                                               strict=True) if c in index]  # fmt: skip
        meta = {**r.meta, "crowd_boxes": [b for b, _ in crowd], "crowd_labels": [c for _, c in crowd]}
        records.append(replace(r, labels=tuple(index[c] for c in r.labels), meta=meta))
    meta = {**split.meta, "categories": [{"id": k, "name": n} for k, n in enumerate(names)],
            "base_category_ids": [k for k, n in enumerate(names) if n not in novel],
            "novel_category_ids": [k for k, n in enumerate(names) if n in novel]}  # fmt: skip
    return replace(split, records=records, meta=meta)


def letterboxed(split: Split, size: int, where: str) -> Split:
    """``split`` with every image letterboxed to ``size``: boxes in input pixels, images numbered (module
    docstring)."""
    numbers = image_numbers(split.records)
    files: list[dict] = [{} for _ in numbers]
    records = []
    for r in split.records:
        i = numbers[str(r.image)]
        files[i] = {"image": str(r.image), "width": r.width, "height": r.height}
        boxes, meta = r.boxes, r.meta
        if boxes or meta.get("crowd_boxes"):
            if not (r.width and r.height):
                raise DatasetError(f"{where}: record {r.image_id} has boxes but no image size; re-run the `data` "
                                   f"stage")  # fmt: skip
            lb = Letterbox.fit(r.width, r.height, size)
            boxes = tuple(tuple(float(v) for v in b) for b in lb.to_input(boxes)) if boxes else ()
            if meta.get("crowd_boxes"):  # COCO's crowd regions, scored as COCOeval does (``coco_ground_truth``)
                meta = {**meta, "crowd_boxes": [[float(v) for v in b] for b in lb.to_input(meta["crowd_boxes"])]}
        records.append(replace(r, image=i, width=size, height=size, boxes=boxes, meta=meta))
    return replace(split, records=records, meta={**split.meta, "files": files, "image_size": size, "where": where})
