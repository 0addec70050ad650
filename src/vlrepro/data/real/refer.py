"""RefCOCO, RefCOCO+, RefCOCOg and ReferItGame (refclef) in the layout of the ``refer`` toolkit.

On disk (one folder per dataset under the refer root)::

    <root>/<dataset>/instances.json      COCO-style images / annotations (bbox [x, y, w, h]) / categories
    <root>/<dataset>/refs(<split_by>).p  pickled list of refs: ref_id, ann_id, image_id, category_id,
                                         split, sentences [{sent_id, sent, raw, tokens}]

RefCOCO/+/g images are COCO train2014 files, refclef images are saiapr_tc-12 files; ``file_name`` in
instances.json is relative to that image root. REC is scored per expression, so each sentence becomes
one ``Record`` (text = the normalised ``sent``, one phrase spanning it, one box = the referred object).

Each split's ``meta["objects"]`` maps the ``image_id`` of each of its images to the boxes of every annotated
object in it (``instances.json``, degenerate boxes left out): the scene a "random object" control picks from.

``labels`` hold the ref's raw ``category_id``: for RefCOCO/+/g the COCO category id (1..90, with gaps), not a
contiguous index; for refclef the id of refclef's own ``instances.json`` categories.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError, not_set, read_json, require_file
from vlrepro.data.real.safe_pickle import safe_load
from vlrepro.data.records import Phrase, Record, Split, xywh_to_xyxy

# (name in data/real/, refer dataset folder, split_by) — the splits the papers evaluate on
REFER_SETS = (
    ("refcoco", "refcoco", "unc"),
    ("refcoco+", "refcoco+", "unc"),
    ("refcocog", "refcocog", "umd"),
    ("refcocog_google", "refcocog", "google"),
    ("refclef", "refclef", "unc"),
)

SPLIT_BYS: dict[str, tuple[str, ...]] = {
    "refcoco": ("unc", "google"),
    "refcoco+": ("unc",),
    "refcocog": ("umd", "google"),
    "refclef": ("unc", "berkeley"),
}

# Where the refer toolkit itself looks for images, used when no image root is given.
_DEFAULT_IMAGE_DIRS = {"coco": "images/mscoco/images/train2014", "refclef": "images/saiapr_tc-12"}


def load_refer(root: Path, dataset: str, split_by: str, image_root: Path | None = None) -> dict[str, Split]:
    """Load ``<root>/<dataset>/refs(<split_by>).p`` + ``instances.json`` as one ``Split`` per split name.

    Split names are those of the file (``train``, ``val``, ``testA``, ``testB``, ``test``, ...). Sentences
    whose box is degenerate (zero width or height) or that are empty are left out and counted in
    ``Split.meta["dropped"]`` (in sentences). ``image_root`` defaults to where the refer toolkit looks.
    """
    if dataset not in SPLIT_BYS:
        raise DatasetError(f"unknown refer dataset {dataset!r}; expected one of {sorted(SPLIT_BYS)}")
    if split_by not in SPLIT_BYS[dataset]:
        raise DatasetError(f"{dataset} has no split_by {split_by!r}; expected one of {list(SPLIT_BYS[dataset])}")
    folder = Path(root) / dataset
    refs_path = require_file(folder / f"refs({split_by}).p",
                             f"the {dataset} refs ({split_by} split) from the refer data")
    inst_path = folder / "instances.json"
    images, anns = _read_instances(inst_path)
    refs = _read_refs(refs_path)
    if image_root is None:
        image_root = Path(root) / _DEFAULT_IMAGE_DIRS["refclef" if dataset == "refclef" else "coco"]

    records: dict[str, list[Record]] = defaultdict(list)
    dropped: dict[str, dict[str, int]] = defaultdict(lambda: {"degenerate_box": 0, "empty_sentence": 0})
    n_refs: dict[str, int] = defaultdict(int)
    split_images: dict[str, set[int]] = defaultdict(set)
    for i, ref in enumerate(refs):
        where = f"{refs_path}: ref {i}"
        split = _field(ref, "split", str, where)
        ann_id = _field(ref, "ann_id", int, where)
        ann = anns.get(ann_id)
        if ann is None:
            raise DatasetError(f"{where} refers to ann_id {ann_id}, which {inst_path} does not have; "
                               f"refs({split_by}).p and instances.json must come from the same {dataset} folder")
        image_id = _field(ref, "image_id", int, where)
        img = images.get(image_id)
        if img is None:
            raise DatasetError(f"{where} refers to image_id {image_id}, which {inst_path} does not have")
        sentences = _field(ref, "sentences", list, where)
        n_refs[split] += 1
        split_images[split].add(image_id)
        box = ann["box"]
        if not (box[2] > box[0] and box[3] > box[1]):
            dropped[split]["degenerate_box"] += len(sentences)
            continue
        ref_id = _field(ref, "ref_id", int, where)
        category = _field(ref, "category_id", int, where)
        for j, sent in enumerate(sentences):
            text = _sentence_text(sent, f"{where} sentence {j}").strip()
            if not text:
                dropped[split]["empty_sentence"] += 1
                continue
            records[split].append(
                Record(
                    image_id=str(image_id),
                    image=img["file_name"],
                    width=img["width"],
                    height=img["height"],
                    text=text,
                    boxes=(box,),
                    labels=(category,),
                    phrases=(Phrase(0, len(text), (0,)),),
                    meta={"ref_id": ref_id, "ann_id": ann_id, "split": split,
                          "sent_id": _field(sent, "sent_id", int, f"{where} sentence {j}")},
                )
            )
    splits = sorted(set(n_refs))
    return {
        s: Split(
            records[s],
            meta={"dataset": dataset, "split_by": split_by, "split": s, "image_root": str(image_root),
                  "source": str(refs_path), "n_refs": n_refs[s], "dropped": dict(dropped[s]),
                  "objects": _objects(anns, split_images[s])},
        )
        for s in splits
    }


def refer_from_config(cfg: RealDataConfig, dataset: str, split_by: str) -> dict[str, Split]:
    """:func:`load_refer` with the paths of ``data.real`` (``refer`` + ``coco_train2014`` or ``saiapr``)."""
    if cfg.refer is None:
        raise not_set("refer", f"the refer data root (holding {dataset}/)")
    image_root = cfg.saiapr if dataset == "refclef" else cfg.coco_train2014
    return load_refer(cfg.refer, dataset, split_by, image_root)


def _field(d: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: expected a dict, found {type(d).__name__}")
    if key not in d:
        raise DatasetError(f"{where}: no {key!r} (has {sorted(map(str, d))})")
    value = d[key]
    # bool is an int subclass; an id that is True/False is a broken file, not an id.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DatasetError(f"{where}: {key!r} is {type(value).__name__} {value!r:.40}, expected {kind.__name__}")
    return value


def _sentence_text(sent: Any, where: str) -> str:
    if isinstance(sent, dict) and "sent" not in sent and isinstance(sent.get("tokens"), list):
        return " ".join(str(t) for t in sent["tokens"])
    return _field(sent, "sent", str, where)


def _read_instances(path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    doc = read_json(path, "the refer data's instances.json (images, annotations, categories)")
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: expected a JSON object with images and annotations")
    images: dict[int, dict] = {}
    for i, img in enumerate(_list(doc, "images", path)):
        where = f"{path}: images[{i}]"
        images[_field(img, "id", int, where)] = {
            "file_name": _field(img, "file_name", str, where),
            "width": _field(img, "width", int, where),
            "height": _field(img, "height", int, where),
        }
    anns: dict[int, dict] = {}
    for i, ann in enumerate(_list(doc, "annotations", path)):
        where = f"{path}: annotations[{i}]"
        bbox = _field(ann, "bbox", list, where)
        anns[_field(ann, "id", int, where)] = {"box": _checked_xyxy(bbox, where),
                                               "image_id": _field(ann, "image_id", int, where)}
    return images, anns


def _objects(anns: dict[int, dict], image_ids: set[int]) -> dict[str, list[list[float]]]:
    """Boxes of every non-degenerate object of the images ``image_ids`` (``meta["objects"]``), in file order."""
    out: dict[str, list[list[float]]] = {str(i): [] for i in sorted(image_ids)}
    for ann in anns.values():
        x0, y0, x1, y1 = ann["box"]
        if ann["image_id"] in image_ids and x1 > x0 and y1 > y0:
            out[str(ann["image_id"])].append([x0, y0, x1, y1])
    return out


def _list(doc: dict, key: str, path: Path) -> list:
    value = doc.get(key)
    if not isinstance(value, list):
        raise DatasetError(f"{path}: no {key!r} list (found {type(value).__name__})")
    return value


def _checked_xyxy(bbox: list, where: str) -> tuple[float, float, float, float]:
    if len(bbox) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        raise DatasetError(f"{where}: bbox {bbox!r:.60} is not [x, y, w, h]")
    return xywh_to_xyxy(*bbox)


def _read_refs(path: Path) -> list:
    # Python 2 wrote the refs' str as 8-bit strings: keep them as bytes and decode as UTF-8 here, so that
    # non-ASCII expressions come out right instead of as latin-1 mojibake.
    refs = _decode_py2(safe_load(path, encoding="bytes"))
    if not isinstance(refs, list):
        raise DatasetError(f"{path}: expected a pickled list of refs, found {type(refs).__name__}")
    return refs


def _decode_py2(obj: Any) -> Any:
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj.decode("latin1")
    if isinstance(obj, dict):
        return {_decode_py2(k): _decode_py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_py2(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode_py2(v) for v in obj)
    return obj
