"""CUB-200-2011 (ALA's benchmark) as records: one per image, the class as label, the bird's box and mask.

On-disk layout (the official archive ``CUB_200_2011.tgz``; the masks come in a separate ``segmentations.tgz``)::

    CUB_200_2011/images.txt               <image_id> <relative path>
    CUB_200_2011/classes.txt              <class_id> <name>            e.g. "1 001.Black_footed_Albatross"
    CUB_200_2011/image_class_labels.txt   <image_id> <class_id>
    CUB_200_2011/train_test_split.txt     <image_id> <is_training_image>
    CUB_200_2011/bounding_boxes.txt       <image_id> <x> <y> <width> <height>   (floats, pixels)
    CUB_200_2011/images/<relative path>
    segmentations/<relative path with .png>   greyscale soft masks

Split (ALA: train 5,000 / val 994 / test 5,794): the official test images are the test split; the
official 5,994 training images are split into train and val by a seeded, class-stratified draw, so
every seed keeps each species' share of val (≈5 of its ≈30 training images). CUB has no official
validation split, so the seed is part of the experiment's definition (``data.real.cub_split_seed``).

Boxes: CUB's ``x y w h`` are read as continuous pixel coordinates, so ``xyxy = (x, y, x + w, y + h)``
(the schema's right/bottom-exclusive convention, as for COCO; ``vlrepro.data.records.xywh_to_xyxy``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vlrepro.data.real.errors import DatasetError, image_size, missing, not_set, require_dir
from vlrepro.data.records import Record, Split, xywh_to_xyxy

if TYPE_CHECKING:
    from vlrepro.data.real.config import RealDataConfig

# ALA's numbers: the official 5,994 training images give 5,000 train + 994 val.
PAPER_N_VAL = 994
PAPER_N_TRAIN_OFFICIAL = 5994

# ALA's reference code binarises the ground-truth masks with `gt >= 128` (validate/compute_miou.py);
# the CUB masks are soft (grey levels along uncertain borders), so "> 0" would give a fatter bird.
MASK_THRESHOLD = 128

_FILES = {
    "images.txt": ("<image_id> <relative path>", 2),
    "classes.txt": ("<class_id> <name>", 2),
    "image_class_labels.txt": ("<image_id> <class_id>", 2),
    "train_test_split.txt": ("<image_id> <is_training_image>", 2),
    "bounding_boxes.txt": ("<image_id> <x> <y> <w> <h>", 5),
}


def load_cub(
    root: str | Path,
    segmentations: str | Path | None = None,
    *,
    seed: int = 0,
    n_val: int | None = None,
    read_sizes: bool = True,
) -> dict[str, Split]:
    """Read CUB-200-2011 at ``root`` (the ``CUB_200_2011/`` folder) into ``{"train", "val", "test"}`` splits.

    ``segmentations``: the ``segmentations/`` folder; when None, ``root/segmentations`` and then
    ``root/../segmentations`` are used if present, else records carry ``meta["mask"] = None``.
    ``n_val``: how many official training images go to val; None keeps ALA's proportion 994 / 5,994
    (exactly 994 on the full dataset). ``read_sizes``: read each image's header for width/height (the
    text files do not give them); False leaves width = height = 0 ("unknown").
    """
    root = Path(root)
    require_dir(root, f"the CUB_200_2011/ root holding {', '.join(_FILES)}")
    tables = {name: _read_table(root / name, *form) for name, form in _FILES.items()}
    classes = _class_names(root / "classes.txt", tables["classes.txt"])
    paths = {i: v[0] for i, v in tables["images.txt"].items()}
    labels = {i: _int(v[0], root / "image_class_labels.txt", i) for i, v in tables["image_class_labels.txt"].items()}
    is_train = {i: _flag(v[0], root / "train_test_split.txt", i) for i, v in tables["train_test_split.txt"].items()}
    boxes = {i: _box(v, root / "bounding_boxes.txt", i) for i, v in tables["bounding_boxes.txt"].items()}
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train),
                        ("bounding_boxes.txt", boxes)):
        _same_ids(root / name, table, paths)
    for i, c in labels.items():
        if not 1 <= c <= len(classes):
            raise DatasetError(f"{root / 'image_class_labels.txt'}: image {i} has class {c}, "
                               f"but classes.txt defines classes 1..{len(classes)}")

    seg_dir = _find_segmentations(root, segmentations)
    image_root = root / "images"
    records: dict[int, Record] = {}
    for i in sorted(paths):
        rel = paths[i]
        mask = None
        if seg_dir is not None:
            mask = str(Path(rel).with_suffix(".png"))
            if not (seg_dir / mask).is_file():
                raise missing(seg_dir / mask, f"the segmentation mask of image {i} (one PNG per line of "
                                              f"images.txt in {seg_dir})")
        width, height = image_size(image_root / rel, f"images.txt (image {i})") if read_sizes else (0, 0)
        records[i] = Record(
            image_id=str(i),
            image=rel,
            width=width,
            height=height,
            text=classes[labels[i] - 1],
            boxes=(boxes[i],),
            labels=(labels[i] - 1,),
            meta={"image_id": i, "mask": mask},
        )

    official_train = [i for i in sorted(paths) if is_train[i]]
    test = [i for i in sorted(paths) if not is_train[i]]
    if not official_train:
        raise DatasetError(f"{root / 'train_test_split.txt'}: no image has is_training_image = 1")
    if n_val is None:
        n_val = round(len(official_train) * PAPER_N_VAL / PAPER_N_TRAIN_OFFICIAL)
    if not 0 <= n_val < len(official_train):
        raise ValueError(f"n_val={n_val}: the official training set has {len(official_train)} images; "
                         f"need 0 <= n_val < {len(official_train)} so that train is not empty")
    val = stratified_holdout(official_train, [labels[i] for i in official_train], n_val, seed)
    ids = {"train": [i for i in official_train if i not in val], "val": sorted(val), "test": test}

    common = {
        "dataset": "cub",
        "image_root": str(image_root),
        "mask_root": None if seg_dir is None else str(seg_dir),
        "mask_threshold": MASK_THRESHOLD,
        "classes": classes,
        "split_seed": seed,
        "split_rule": f"official test; official train minus a class-stratified seeded draw of {n_val} for val",
    }
    return {name: Split([records[i] for i in members], meta={**common, "split": name})
            for name, members in ids.items()}


def cub_from_config(cfg: RealDataConfig, **kwargs) -> dict[str, Split]:
    """``load_cub`` with the paths and seed of ``data.real`` in params.yaml."""
    if cfg.cub is None:
        raise not_set("cub", "the CUB_200_2011/ folder")
    return load_cub(cfg.cub, cfg.cub_segmentations, seed=cfg.cub_split_seed, **kwargs)


def stratified_holdout(ids: list[int], labels: list[int], n_holdout: int, seed: int) -> set[int]:
    """Draw ``n_holdout`` of ``ids`` so that each class gives its proportional share (largest remainders).

    Deterministic in ``seed``; ties between classes' remainders are broken at random, so that no class is
    favoured by its index.
    """
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    if not 0 <= n_holdout <= len(ids):
        raise ValueError(f"cannot hold out {n_holdout} of {len(ids)} items")
    if n_holdout == 0:
        return set()
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, c in zip(ids, labels, strict=True):
        by_class[c].append(i)
    classes = sorted(by_class)
    sizes = np.array([len(by_class[c]) for c in classes], dtype=float)
    quota = n_holdout * sizes / sizes.sum()
    take = np.floor(quota).astype(int)
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[order[: n_holdout - int(take.sum())]] += 1
    held: set[int] = set()
    for c, k in zip(classes, take, strict=True):
        members = sorted(by_class[c])
        held.update(members[j] for j in rng.permutation(len(members))[:k])
    return held


def load_cub_mask(root_or_seg_dir: str | Path, record: Record, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """The bird's mask of ``record`` as a bool ``(H, W)`` array: mask pixel value ``>= threshold``.

    ``root_or_seg_dir``: the ``segmentations/`` folder or a folder that holds it (e.g. the CUB root, or
    ``Split.meta["mask_root"]``). ``threshold=1`` keeps every non-zero pixel of the soft mask.
    """
    rel = record.meta.get("mask")
    if rel is None:
        raise DatasetError(f"record {record.image_id!r} has no mask: load_cub found no segmentations/ folder "
                           "(set data.real.cub_segmentations)")
    base = Path(root_or_seg_dir)
    seg_dir = base / "segmentations" if (base / "segmentations").is_dir() else base
    path = seg_dir / rel
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise missing(path, f"the segmentation mask of image {record.image_id}") from None
    except OSError as e:
        raise DatasetError(f"{path}: not a readable PNG mask ({e})") from None
    if record.width and record.height and grey.shape != (record.height, record.width):
        raise DatasetError(f"{path}: mask is {grey.shape[1]}x{grey.shape[0]}, "
                           f"but image {record.image_id} is {record.width}x{record.height}")
    return grey >= threshold


def clean_class_name(name: str) -> str:
    """``"001.Black_footed_Albatross"`` → ``"Black footed Albatross"`` (the names ALA's code prompts with)."""
    return re.sub(r"^\d+\.", "", name).replace("_", " ").strip()


def _read_table(path: Path, form: str, n_columns: int) -> dict[int, list[str]]:
    """``{first column as int: the other columns}``; the last column may hold spaces (image paths)."""
    n_rest = n_columns - 1
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise missing(path, f"the CUB-200-2011 file with lines '{form}'") from None
    rows: dict[int, list[str]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_rest)
        if len(parts) != n_rest + 1 or not parts[0].isdigit():
            raise DatasetError(f"{path} line {n}: expected '{form}', got {line!r}")
        key = int(parts[0])
        if key in rows:
            raise DatasetError(f"{path} line {n}: id {key} appears twice")
        rows[key] = parts[1:]
    if not rows:
        raise DatasetError(f"{path}: empty; expected lines '{form}'")
    return rows


def _class_names(path: Path, table: dict[int, list[str]]) -> list[str]:
    if sorted(table) != list(range(1, len(table) + 1)):
        raise DatasetError(f"{path}: class ids must be 1..{len(table)} without gaps, got {sorted(table)[:10]}...")
    return [clean_class_name(table[c][0]) for c in range(1, len(table) + 1)]


def _int(value: str, path: Path, image_id: int) -> int:
    return _parse(int, value, path, image_id, "an integer")


def _flag(value: str, path: Path, image_id: int) -> bool:
    if value not in ("0", "1"):
        raise DatasetError(f"{path}: image {image_id}: is_training_image must be 0 or 1, got {value!r}")
    return value == "1"


def _box(values: list[str], path: Path, image_id: int) -> tuple[float, float, float, float]:
    x, y, w, h = (_parse(float, v, path, image_id, "a number") for v in values)
    if not (w > 0 and h > 0):
        raise DatasetError(f"{path}: image {image_id}: box width and height must be > 0, got w={w} h={h}")
    return xywh_to_xyxy(x, y, w, h)


def _parse(kind: Callable[[str], float], value: str, path: Path, image_id: int, what: str):
    try:
        return kind(value)
    except ValueError:
        raise DatasetError(f"{path}: image {image_id}: expected {what}, got {value!r}") from None


def _same_ids(path: Path, table: Mapping[int, object], images: Mapping[int, str]) -> None:
    absent = sorted(set(images) - set(table))
    extra = sorted(set(table) - set(images))
    if absent or extra:
        raise DatasetError(f"{path}: its image ids differ from images.txt (missing {absent[:5]}, "
                           f"unknown {extra[:5]}); expected one line per image of images.txt")


def _find_segmentations(root: Path, given: str | Path | None) -> Path | None:
    if given is not None:
        return require_dir(Path(given), "CUB's segmentations/ (one PNG per image)")
    # Both official archives extracted into one folder give root/../segmentations; some guides move it inside.
    for candidate in (root / "segmentations", root.parent / "segmentations"):
        if candidate.is_dir():
            return candidate
    return None
