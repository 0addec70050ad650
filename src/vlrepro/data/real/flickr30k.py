"""Flickr30k Entities: captions whose phrases are linked to boxes.

On disk (the Flickr30k Entities annotation release)::

    <root>/Sentences/<image_id>.txt    five captions, phrases marked ``[/EN#<entity>/<type>... words]``
    <root>/Annotations/<image_id>.xml  PASCAL-VOC-like: <size>, <object>s with one or more <name>
                                       (entity ids) and a <bndbox>, or <nobndbox>/<scene> flags
    <root>/{train,val,test}.txt        image ids of each split, one per line

Images are ``<image_id>.jpg`` under the Flickr30k image folder (``flickr30k-images/``).

Box convention: the XML gives 1-based inclusive pixel indices (a box covering only the top-left pixel is
xmin=ymin=xmax=ymax=1). Our boxes are 0-based, right/bottom exclusive, so that box becomes (0, 0, 1, 1):
``(xmin - 1, ymin - 1, xmax, ymax)``, then clipped to the image. Boxes with nothing left after clipping are
dropped and counted.

Text: each caption is re-joined from its whitespace-split words with single spaces (as the dataset's own
``get_sentence_data`` does), and ``Phrase`` spans are character offsets into that text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError, not_set, require_dir, require_file
from vlrepro.data.records import Phrase, Record, Split

SPLITS = ("train", "val", "test")
NOT_VISUAL = "0"  # the entity id of "notvisual" phrases: never annotated with boxes

_HEADER = re.compile(r"\[/EN#(\d+)((?:/[^/\s\]]+)+)$")


@dataclass(frozen=True)
class MarkedPhrase:
    """A phrase of a caption: ``text[start:end]``, its entity (coreference chain) id and its types."""

    start: int
    end: int
    entity: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class Caption:
    text: str
    phrases: tuple[MarkedPhrase, ...]


@dataclass
class ImageBoxes:
    """One Annotations/<id>.xml: image size, boxes (xyxy, exclusive) and which entities each box shows."""

    width: int
    height: int
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    entity_boxes: dict[str, list[int]] = field(default_factory=dict)
    scene: set[str] = field(default_factory=set)
    nobox: set[str] = field(default_factory=set)
    dropped_boxes: int = 0


def parse_caption(line: str, where: str) -> Caption:
    """Parse one line of a Sentences file into plain text and phrase spans."""
    words: list[str] = []
    pos = 0  # length of " ".join(words) so far
    phrases: list[MarkedPhrase] = []
    current: tuple[int, str, tuple[str, ...]] | None = None  # (start, entity, types) while inside [...]
    for token in line.split():
        if current is None and token.startswith("["):
            m = _HEADER.match(token)
            if m is None:
                raise DatasetError(f"{where}: {token!r} is not a phrase header like [/EN#12/people")
            current = (pos + (1 if words else 0), m.group(1), tuple(m.group(2)[1:].split("/")))
            continue
        closing = current is not None and token.endswith("]")
        word = token[:-1] if closing else token
        if word:
            pos += len(word) + (1 if words else 0)
            words.append(word)
        if closing:
            start, entity, types = current
            if pos <= start:
                raise DatasetError(f"{where}: phrase [/EN#{entity}/... has no words in {line.strip()!r:.120}")
            phrases.append(MarkedPhrase(start, pos, entity, types))
            current = None
    if current is not None:
        raise DatasetError(f"{where}: phrase [/EN#{current[1]}... is not closed with ']'")
    return Caption(" ".join(words), tuple(phrases))


def read_sentences(path: Path) -> list[Caption]:
    """All captions of one ``Sentences/<image_id>.txt``."""
    require_file(path, "the image's captions from the Flickr30k Entities annotations (Sentences/)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from e
    return [parse_caption(line, f"{path} line {i + 1}") for i, line in enumerate(lines) if line.strip()]


def read_annotations(path: Path) -> ImageBoxes:
    """Boxes of one ``Annotations/<image_id>.xml``; a box listed under several names serves each of them."""
    name = str(path)
    require_file(path, "the image's boxes from the Flickr30k Entities annotations (Annotations/)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{name}: not valid XML ({e})") from e
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{name}: no <size>; expected <size><width>..</width><height>..</height></size>")
    out = ImageBoxes(_int(size, "width", name, "<size>"), _int(size, "height", name, "<size>"))
    for k, obj in enumerate(root.iter("object")):
        entities = [(n.text or "").strip() for n in obj.findall("name")]
        if not entities or not all(entities):
            raise DatasetError(f"{name}: <object> {k} without a <name> (entity id)")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            if _flag(obj, "scene", name):
                out.scene.update(entities)
            if _flag(obj, "nobndbox", name):
                out.nobox.update(entities)
            continue
        x0, y0, x1, y1 = (_int(bndbox, t, name, "<bndbox>") for t in ("xmin", "ymin", "xmax", "ymax"))
        # 1-based inclusive -> 0-based exclusive, clipped to the image (see the module docstring).
        box = (float(max(x0 - 1, 0)), float(max(y0 - 1, 0)), float(min(x1, out.width)), float(min(y1, out.height)))
        if not (box[2] > box[0] and box[3] > box[1]):
            out.dropped_boxes += 1
            continue
        out.boxes.append(box)
        for e in entities:
            out.entity_boxes.setdefault(e, []).append(len(out.boxes) - 1)
    return out


def read_split_ids(path: Path) -> list[str]:
    """Image ids listed in ``train.txt`` / ``val.txt`` / ``test.txt``."""
    require_file(path, "the split's image ids (one per line) at the Flickr30k Entities root")
    ids = []
    for i, line in enumerate(path.read_text().splitlines()):
        s = line.strip()
        if not s:
            continue
        if not s.isdigit():
            raise DatasetError(f"{path} line {i + 1}: {s!r:.40} is not a Flickr30k image id")
        ids.append(s)
    return ids


def caption_record(image_id: str, caption: Caption, boxes: ImageBoxes, sent_index: int, split: str) -> Record:
    """One ``Record`` per caption: phrases with boxes are kept, the others only counted in ``meta``."""
    record_boxes: list[tuple[float, float, float, float]] = []
    slot: dict[int, int] = {}  # index in ImageBoxes.boxes -> index in this record's boxes
    phrases, entities, types = [], [], []
    no_box = Counter()
    for p in caption.phrases:
        found = boxes.entity_boxes.get(p.entity, []) if p.entity != NOT_VISUAL else []
        if not found:
            reason = ("notvisual" if p.entity == NOT_VISUAL else "scene" if p.entity in boxes.scene
                      else "nobox" if p.entity in boxes.nobox else "unannotated")
            no_box[reason] += 1
            continue
        for b in found:
            if b not in slot:
                slot[b] = len(record_boxes)
                record_boxes.append(boxes.boxes[b])
        phrases.append(Phrase(p.start, p.end, tuple(slot[b] for b in found)))
        entities.append(p.entity)
        types.append(list(p.types))
    return Record(
        image_id=image_id,
        image=f"{image_id}.jpg",
        width=boxes.width,
        height=boxes.height,
        text=caption.text,
        boxes=tuple(record_boxes),
        phrases=tuple(phrases),
        meta={"split": split, "sent_index": sent_index, "entity_ids": entities, "phrase_types": types,
              "n_phrases": len(caption.phrases), "n_phrases_without_box": sum(no_box.values()),
              "without_box": dict(no_box)},
    )


def load_flickr30k_entities(
    root: Path, image_root: Path | None = None, splits: tuple[str, ...] = SPLITS
) -> dict[str, Split]:
    """Load the Flickr30k Entities splits named in ``splits``: one ``Record`` per caption."""
    root = Path(root)
    require_dir(root / "Sentences", "the captions folder of the Flickr30k Entities annotations")
    require_dir(root / "Annotations", "the boxes folder of the Flickr30k Entities annotations")
    out = {}
    for split in splits:
        records: list[Record] = []
        dropped_boxes = 0
        without_box = Counter()
        for image_id in read_split_ids(root / f"{split}.txt"):
            boxes = read_annotations(root / "Annotations" / f"{image_id}.xml")
            dropped_boxes += boxes.dropped_boxes
            for i, caption in enumerate(read_sentences(root / "Sentences" / f"{image_id}.txt")):
                rec = caption_record(image_id, caption, boxes, i, split)
                without_box.update(rec.meta["without_box"])
                records.append(rec)
        out[split] = Split(
            records,
            meta={"dataset": "flickr30k_entities", "split": split,
                  "image_root": None if image_root is None else str(image_root), "source": str(root),
                  "n_phrases": sum(r.meta["n_phrases"] for r in records),
                  "n_phrases_without_box": sum(without_box.values()), "without_box": dict(without_box),
                  "dropped_boxes": dropped_boxes},
        )
    return out


def flickr30k_entities_from_config(cfg: RealDataConfig, splits: tuple[str, ...] = SPLITS) -> dict[str, Split]:
    """:func:`load_flickr30k_entities` with ``data.real.flickr30k_entities`` and ``flickr30k_images``."""
    if cfg.flickr30k_entities is None:
        raise not_set("flickr30k_entities", "the Flickr30k Entities root holding Annotations/ and Sentences/")
    return load_flickr30k_entities(cfg.flickr30k_entities, cfg.flickr30k_images, splits)


def _int(parent: ET.Element, tag: str, name: str, within: str) -> int:
    el = parent.find(tag)
    if el is None or el.text is None:
        raise DatasetError(f"{name}: {within} without <{tag}>")
    try:
        # Some VOC-style writers emit "12.0"; a fractional pixel index would be a broken file.
        value = float(el.text.strip())
    except ValueError:
        raise DatasetError(f"{name}: <{tag}> {el.text.strip()!r:.20} in {within} is not a number") from None
    if value != int(value):
        raise DatasetError(f"{name}: <{tag}> {value} in {within} is not a whole pixel index")
    return int(value)


def _flag(obj: ET.Element, tag: str, name: str) -> bool:
    el = obj.find(tag)
    if el is None or el.text is None:
        return False
    try:
        return int(el.text.strip()) > 0
    except ValueError:
        raise DatasetError(f"{name}: <{tag}> {el.text.strip()!r:.20} is not 0 or 1") from None
