"""A real record's image as a model input: read with Pillow, letterboxed to a square, boxes and masks alike.

Real splits store no pixels (no ``images.npy``): ``Record.image`` is a path relative to the split's
``meta["image_root"]``, which the `data` stage took from ``data.real`` (``vlrepro.data.real``). The models
take a square input, so an image is scaled to fit ``size`` x ``size`` with its aspect ratio kept and pasted
in the middle of a canvas of ``PAD`` (letterboxing: nothing is distorted or cut away). Its boxes and masks
go through the same map (``Letterbox.to_input``, ``letterbox_mask``), and predictions come back with
``Letterbox.to_original`` / ``boxes_to_original``: metrics are scored in the original image's pixels.

Missing images. ``check_images`` looks for every file a split needs before any compute and stops with a
``DatasetError`` that gives how many are missing, the first few paths and the ``data.real`` key to fix. A
record whose image is missing is never dropped: the run would then score another set of expressions than the
paper's. ``load_image`` raises the same kind of error for a file that is missing, unreadable or of another
size than its annotations say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlrepro.data.real.errors import README_HINT, DatasetError
from vlrepro.data.records import Record, Split, load_split

# The ImageNet mean colour: the backbones normalise it to about 0, so the padding carries no signal.
PAD = (124, 116, 104)

# The data.real key behind each adapter's image root (Split.meta["dataset"] -> key), for the error messages.
IMAGE_ROOT_KEYS = {
    "refcoco": "coco_train2014", "refcoco+": "coco_train2014", "refcocog": "coco_train2014",
    "refclef": "saiapr", "flickr30k_entities": "flickr30k_images", "visual_genome": "visual_genome",
    "cub": "cub", "coco_karpathy": "coco_images", "coco_instances": "coco_images", "web_captions": "web_images",
    "odinw": "odinw",
}  # fmt: skip

SHOW_MISSING = 5  # paths listed in the error for missing images


@dataclass(frozen=True)
class Letterbox:
    """How a ``width`` x ``height`` image sits in the ``size`` x ``size`` input: resized to
    ``new_width`` x ``new_height`` and pasted with its top-left corner at (``pad_x``, ``pad_y``)."""

    width: int
    height: int
    size: int
    new_width: int
    new_height: int
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> Letterbox:
        """The letterbox of a ``width`` x ``height`` image in a square of side ``size``; the longer side fills it."""
        if width <= 0 or height <= 0 or size <= 0:
            raise ValueError(f"letterbox of a {width}x{height} image into {size} px: sizes must be positive")
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(width, height, size, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2)

    def as_row(self) -> tuple[int, ...]:
        """The fields as one row (for a batch: ``boxes_to_original``, or a tensor saved with features)."""
        return astuple(self)

    def to_input(self, boxes: Any) -> np.ndarray:
        """Original-pixel xyxy boxes (N, 4) -> their pixels in the letterboxed input (float64)."""
        return boxes_to_input(boxes, np.asarray([self.as_row()]))

    def to_original(self, boxes: Any) -> np.ndarray:
        """Input-pixel xyxy boxes (N, 4) -> original pixels, clipped to the image (float64)."""
        return boxes_to_original(boxes, np.asarray([self.as_row()]))


def _scales(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.asarray(rows, dtype=np.float64)
    # per axis: the resized side is rounded to whole pixels, so x and y scales differ by up to half a pixel
    scale = np.stack([rows[:, 3] / rows[:, 0], rows[:, 4] / rows[:, 1]], -1)
    return scale, rows[:, 5:7], rows[:, 0:2]


def boxes_to_input(boxes: Any, rows: Any) -> np.ndarray:
    """Batched ``Letterbox.to_input``: ``rows`` (N, 7) of ``Letterbox.as_row`` (or one row for every box)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
    scale, pad, _ = _scales(np.asarray(rows).reshape(-1, 7))
    return (b * scale[:, None] + pad[:, None]).reshape(-1, 4)


def boxes_to_original(boxes: Any, rows: Any) -> np.ndarray:
    """Batched ``Letterbox.to_original``: input-pixel xyxy boxes (N, 4) -> original pixels, clipped to each
    image (a predicted box reaching into the padding covers nothing there)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
    scale, pad, size = _scales(np.asarray(rows).reshape(-1, 7))
    return ((b - pad[:, None]) / scale[:, None]).clip(0, size[:, None]).reshape(-1, 4)


def letterbox_mask(mask: np.ndarray, lb: Letterbox) -> np.ndarray:
    """An (H, W) mask of the original image -> (size, size), nearest neighbour, 0 in the padding."""
    if mask.shape != (lb.height, lb.width):
        raise ValueError(f"mask of shape {mask.shape} for a {lb.width}x{lb.height} image")
    resized = Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize((lb.new_width, lb.new_height), Image.NEAREST)
    out = np.zeros((lb.size, lb.size), dtype=np.uint8)
    out[lb.pad_y : lb.pad_y + lb.new_height, lb.pad_x : lb.pad_x + lb.new_width] = np.asarray(resized)
    return out.astype(mask.dtype)


def image_numbers(records: Sequence[Record]) -> dict[str, int]:
    """A real split's image files numbered 0, 1, ... in order of first appearance (records name them by path)."""
    return {f: i for i, f in enumerate(dict.fromkeys(str(r.image) for r in records))}


def record_images(split: Split) -> list[int]:
    """Each record's image number: its index into ``images.npy`` (world), or ``image_numbers`` (real files)."""
    if split.images is not None:
        return [int(r.image) for r in split.records]
    numbers = image_numbers(split.records)
    return [numbers[str(r.image)] for r in split.records]


def open_real_split(folder: Path, reads: str, key: str) -> Split:
    """The `data` stage's conversion in ``folder`` (``data/real/<dataset>/<split>``), every image file checked
    (``check_images``). A missing conversion is a ``DatasetError`` saying what ``reads`` it (e.g. "amc.source =
    real reads vg train") and the ``data.real`` key(s) ``key`` to set."""
    folder = Path(folder)
    if not (folder / "records.json").is_file():
        raise DatasetError(f"{folder}: missing; {reads} from the `data` stage's conversion of data.real.{key}. Set "
                           f"the path and re-run the `data` stage: dvc repro data ({README_HINT})")  # fmt: skip
    split = load_split(folder)
    check_images(split.meta, split.records, str(folder))
    return split


def image_root(meta: dict[str, Any], where: str) -> Path:
    """The split's image root (``meta["image_root"]``); an error naming the ``data.real`` key when unset."""
    root = meta.get("image_root")
    if not root:
        raise DatasetError(f"{where}: the split has no image root; set data.real.{_root_key(meta)} to the folder "
                           f"holding its images and re-run the `data` stage (dvc repro data) ({README_HINT})")
    return Path(root)


def check_images(meta: dict[str, Any], records: Sequence[Record], where: str) -> None:
    """Stop with a ``DatasetError`` if any image of ``records`` is not a file under the split's image root:
    how many are missing, the first ``SHOW_MISSING`` paths, and the ``data.real`` key to fix."""
    root = image_root(meta, where)
    key = _root_key(meta)
    if not root.is_dir():
        raise DatasetError(f"{root}/: missing; expected the image folder of {where} (data.real.{key}: point it at "
                           f"the folder holding the images, then re-run the `data` stage; {README_HINT})")
    files = list(dict.fromkeys(str(r.image) for r in records))
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        shown = ", ".join(str(root / f) for f in missing[:SHOW_MISSING])
        more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
        raise DatasetError(
            f"{where}: {len(missing)} of {len(files)} images missing under {root}: {shown}{more}; records are not "
            f"dropped (every expression of a split is scored), so point data.real.{key} at the folder holding all "
            f"of them, or complete it, and re-run the `data` stage ({README_HINT})"
        )


def load_image(meta: dict[str, Any], record: Record, size: int, where: str) -> tuple[np.ndarray, Letterbox]:
    """``record``'s image from the split's image root as uint8 (size, size, 3) RGB, letterboxed, and its
    ``Letterbox``. ``where`` names the split (its folder) in errors.

    The image must have the width and height its annotations give: boxes are in those pixels. EXIF orientation
    is not applied, as the COCO annotations were made on the stored pixels.
    """
    path = image_root(meta, where) / str(record.image)
    about = f"the image of record {record.image_id} ({record.text[:40]!r}) in {where}"
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")  # decodes the whole file: a truncated or corrupt one fails here
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; expected {about} (data.real.{_root_key(meta)} sets the image root; "
                           f"point it at the folder holding the images and re-run the `data` stage; "
                           f"{README_HINT})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: not a readable image ({e}); expected {about}: replace the file with the "
                           f"dataset's original (from its archive)") from None
    if record.width and record.height and rgb.size != (record.width, record.height):
        raise DatasetError(
            f"{path}: image is {rgb.size[0]}x{rgb.size[1]} px but the annotations of {about} say "
            f"{record.width}x{record.height}; data.real.{_root_key(meta)} may point at another version of the images"
        )
    lb = Letterbox.fit(rgb.size[0], rgb.size[1], size)
    canvas = Image.new("RGB", (size, size), PAD)
    canvas.paste(rgb.resize((lb.new_width, lb.new_height), Image.BILINEAR), (lb.pad_x, lb.pad_y))
    return np.array(canvas), lb  # a writable array (torch.as_tensor warns on a read-only one)


def _root_key(meta: dict[str, Any]) -> str:
    return IMAGE_ROOT_KEYS.get(str(meta.get("dataset")), "<the dataset's image key>")
