"""The one record schema shared by the embedded world and the real-dataset adapters.

A split on disk is a folder:

- ``images.npy``   uint8 ``(N, H, W, 3)`` (embedded world), or absent when images live as files
                   under an image root (real datasets; ``Record.image`` is then a relative path);
- ``instances.npy`` uint8 ``(N, H, W)`` instance-id maps (0 = background, k = object k-1 of that image),
                   optional; ``Record.mask_ids`` index into it;
- ``records.json`` the annotations, stored column-wise (one list per field) so that loading is one
                   ``json.load`` and the columns can go straight into numpy.

Boxes are ``xyxy`` in pixels of the stored image, floats, right/bottom exclusive (a one-pixel object at
column 3 has x0=3, x1=4), the convention of torchvision.ops. Other conventions of the schema:

- ``labels`` are the dataset's own class ids: 0-based indices into ``meta["categories"]`` for the world
  and CUB, the raw COCO category ids (1..90) for COCO and the refer sets;
- ``width``/``height`` of 0 mean "not known" (adapters that do not open every image, e.g. Karpathy
  captions, which carry no boxes);
- masks: the world stores instance maps (``mask_ids``); real CUB names its mask file in ``meta["mask"]``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vlrepro.io import atomic_save_npy, atomic_write_bytes

SCHEMA_VERSION = 1


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """COCO-style ``[x, y, width, height]`` to our ``xyxy`` (no ±1: both are continuous coordinates)."""
    return (float(x), float(y), float(x) + float(w), float(y) + float(h))


@dataclass(frozen=True)
class Phrase:
    """A character span ``text[start:end]`` that refers to the boxes ``box_ids`` of its record."""

    start: int
    end: int
    box_ids: tuple[int, ...]


@dataclass(frozen=True)
class Record:
    """One annotated sample: an image, a text and the boxes the text talks about.

    - referring expression: ``text`` is the expression, one phrase spanning it, one box (the target);
    - phrase grounding (Flickr30k Entities): several phrases, each linked to one or more boxes;
    - detection: ``text`` is empty, ``boxes`` + ``labels`` are every object of the image;
    - captions: ``text`` is a caption; boxes optional;
    - fine-grained classification (CUB): ``labels[0]`` is the class, ``mask_ids[0]`` the target's mask.
    """

    image_id: str
    image: int | str
    width: int
    height: int
    text: str = ""
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    labels: tuple[int, ...] = ()
    phrases: tuple[Phrase, ...] = ()
    mask_ids: tuple[int, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"record {self.image_id!r}"
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"{where}: box {i} {(x0, y0, x1, y1)} is not xyxy with x1>x0, y1>y0")
        if self.labels and len(self.labels) != len(self.boxes):
            raise ValueError(f"{where}: {len(self.labels)} labels for {len(self.boxes)} boxes")
        if self.mask_ids and len(self.mask_ids) != len(self.boxes):
            raise ValueError(f"{where}: {len(self.mask_ids)} mask_ids for {len(self.boxes)} boxes")
        for p in self.phrases:
            if not (0 <= p.start < p.end <= len(self.text)):
                raise ValueError(f"{where}: phrase span {p.start}:{p.end} outside text of length {len(self.text)}")
            if any(not 0 <= b < len(self.boxes) for b in p.box_ids):
                raise ValueError(f"{where}: phrase {p.start}:{p.end} links to box ids {p.box_ids}, "
                                 f"but the record has {len(self.boxes)} boxes")

    def phrase_text(self, i: int) -> str:
        p = self.phrases[i]
        return self.text[p.start : p.end]


_COLUMNS = [f.name for f in fields(Record)]


def records_to_columns(records: list[Record]) -> dict[str, list]:
    cols: dict[str, list] = {name: [] for name in _COLUMNS}
    for r in records:
        d = asdict(r)
        for name in _COLUMNS:
            cols[name].append(d[name])
    cols["phrases"] = [[[p.start, p.end, list(p.box_ids)] for p in r.phrases] for r in records]
    return cols


def columns_to_records(cols: dict[str, list], source: str = "records.json") -> list[Record]:
    missing = [c for c in _COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {_COLUMNS}")
    lengths = {c: len(cols[c]) for c in _COLUMNS}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{source}: columns have different lengths {lengths}")
    out = []
    for i in range(lengths["image_id"]):
        out.append(
            Record(
                image_id=cols["image_id"][i],
                image=cols["image"][i],
                width=int(cols["width"][i]),
                height=int(cols["height"][i]),
                text=cols["text"][i],
                boxes=tuple(tuple(float(v) for v in b) for b in cols["boxes"][i]),
                labels=tuple(int(v) for v in cols["labels"][i]),
                phrases=tuple(Phrase(int(s), int(e), tuple(int(b) for b in ids)) for s, e, ids in cols["phrases"][i]),
                mask_ids=tuple(int(v) for v in cols["mask_ids"][i]),
                meta=dict(cols["meta"][i]),
            )
        )
    return out


@dataclass
class Split:
    """A loaded split: its records plus (for the embedded world) the image and instance arrays."""

    records: list[Record]
    images: np.ndarray | None = None
    instances: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def image(self, record: Record) -> np.ndarray:
        if self.images is None or not isinstance(record.image, int):
            raise TypeError(f"record {record.image_id!r} refers to an image file; use the dataset's image root")
        return np.asarray(self.images[record.image])

    def mask(self, record: Record, box: int = 0) -> np.ndarray:
        """Boolean mask of the record's ``box``-th object (needs ``instances.npy``)."""
        if self.instances is None or not record.mask_ids or record.mask_ids[box] < 0:
            raise ValueError(f"record {record.image_id!r} has no mask for box {box}")
        return np.asarray(self.instances[record.image]) == record.mask_ids[box] + 1


def save_split(folder: Path, split: Split) -> None:
    """Write a split folder; each file is written atomically, and arrays the split lacks are removed."""
    folder = Path(folder)
    for name, array in (("images.npy", split.images), ("instances.npy", split.instances)):
        if array is None:  # a stale array from an earlier build must not be loaded with these records
            (folder / name).unlink(missing_ok=True)
    if split.images is not None:
        atomic_save_npy(folder / "images.npy", np.ascontiguousarray(split.images, dtype=np.uint8))
    if split.instances is not None:
        if split.instances.size and split.instances.max() > 255:
            raise ValueError(f"{folder}: instance maps hold at most 255 objects per image (uint8)")
        atomic_save_npy(folder / "instances.npy", np.ascontiguousarray(split.instances, dtype=np.uint8))
    doc = {"schema_version": SCHEMA_VERSION, "meta": split.meta, "columns": records_to_columns(split.records)}
    atomic_write_bytes(folder / "records.json", json.dumps(doc, separators=(",", ":")).encode())


def load_split(folder: Path, mmap: bool = True) -> Split:
    """Load a split folder written by :func:`save_split`; arrays are memory-mapped by default."""
    folder = Path(folder)
    path = folder / "records.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no records.json; run the `data` stage (dvc repro data) first")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it and re-run the `data` stage") from e
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {doc.get('schema_version')!r}, this code reads {SCHEMA_VERSION}")
    mode = "r" if mmap else None
    images = np.load(folder / "images.npy", mmap_mode=mode) if (folder / "images.npy").exists() else None
    inst = np.load(folder / "instances.npy", mmap_mode=mode) if (folder / "instances.npy").exists() else None
    return Split(columns_to_records(doc["columns"], str(path)), images, inst, doc.get("meta", {}))
