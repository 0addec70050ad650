"""Web image-text pairs (BLIP's noisy alt-texts, e.g. Conceptual Captions or SBU) in BLIP's own format.

On disk: the JSON list of BLIP's pre-training annotation files and the images it names::

    <web_captions>  [{"image": "<path under the image root>", "caption": "<text>" | ["<text>", ...]}, ...]
    <web_images>/<path>                                                  the image files

One record per (image, caption), all in split ``"train"`` (BLIP pre-trains on them and scores on COCO).
The image sizes are not read (width = height = 0, "unknown"), as for Karpathy's captions: a web set holds
millions of images, and the run reads each file when it encodes it. Nobody knows which captions are wrong
(``meta["noisy"]`` is absent; the world's ``web`` set has it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlrepro.data.real.errors import DatasetError, not_set, read_json, require_keys
from vlrepro.data.records import Record, Split

if TYPE_CHECKING:
    from vlrepro.data.real.config import RealDataConfig


def load_web_captions(json_path: str | Path, image_root: str | Path | None = None) -> dict[str, Split]:
    """``{"train": Split}``: one record per caption; ``Record.image`` is the entry's ``image`` path, relative to
    ``image_root`` (default: the JSON file's folder). Empty captions are dropped and counted (``meta["empty"]``)."""
    path = Path(json_path)
    expected = 'a JSON list of {"image": ..., "caption": ...} (BLIP\'s pre-training annotation format)'
    doc = read_json(path, expected)
    if not isinstance(doc, list):
        raise DatasetError(f"{path}: got a JSON {type(doc).__name__}; expected {expected}")
    records, empty = [], 0
    for k, entry in enumerate(doc):
        where = f"{path}: [{k}]"
        require_keys(entry, ("image", "caption"), where)
        texts = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        if not isinstance(entry["image"], str) or not all(isinstance(t, str) for t in texts):
            raise DatasetError(f"{where}: 'image' must be a path and 'caption' a string or a list of strings")
        for j, text in enumerate(texts):
            if not text.strip():
                empty += 1
                continue
            records.append(Record(image_id=entry["image"], image=entry["image"], width=0, height=0,
                                  text=" ".join(text.split()), meta={"entry": k, "caption": j}))  # fmt: skip
    root = path.parent if image_root is None else Path(image_root)
    meta = {"dataset": "web_captions", "split": "train", "image_root": str(root), "source": str(path), "empty": empty}
    return {"train": Split(records, meta=meta)}


def web_captions_from_config(cfg: RealDataConfig) -> dict[str, Split]:
    """``load_web_captions`` with ``data.real.web_captions`` and ``data.real.web_images``."""
    if cfg.web_captions is None:
        raise not_set("web_captions", 'a JSON list of {"image": ..., "caption": ...} (BLIP\'s annotation format)')
    return load_web_captions(cfg.web_captions, cfg.web_images)
