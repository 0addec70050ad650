"""SMCIM on the real referring sets (``smcim.source: real``, the ``paper`` profile).

The `data` stage converts RefCOCO (unc), RefCOCO+ (unc) and RefCOCOg (umd) from ``data.real.refer`` into
``data/real/<set>/<split>``: records whose images are files under ``data.real.coco_train2014``. Both SMCIM
paths read them here, each image letterboxed to ``smcim.image_size`` by ``vlrepro.data.images``:

- ``real_split``: one split, checked before any compute: its folder must exist (else an error naming the path
  and ``data.real.refer``) and every image must be on disk (else how many are missing, and which);
- ``RealImageExpressions``: the end-to-end path's dataset (``train.encoder_lr > 0``), images read per sample;
- ``extract_real_split``: the cached path's features (``smcim_features``), images read in chunks;
- ``random_object_acc``: the learning gate's control, the expected Acc@0.5 of a random annotated object of the
  image (every COCO annotation of it, ``meta["objects"]``), as the world's random scene object.

Predictions are mapped back to each image's original pixels (``normalised_to_original``) before Acc@0.5 is
computed against the original boxes.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlrepro.data.images import Letterbox, boxes_to_input, boxes_to_original, check_images, load_image
from vlrepro.data.real.errors import README_HINT, DatasetError
from vlrepro.data.records import Split, load_split
from vlrepro.metrics.boxes import paired_iou, xyxy_to_cxcywh
from vlrepro.smcim.augment import ViewParams, apply_view, draw_view, transform_boxes
from vlrepro.smcim.config import SMCIMParams
from vlrepro.smcim.features import ENCODE_DTYPE, LEVELS, Features, encode_images, encode_view_texts
from vlrepro.smcim.online import ImageExpressions


def real_split(folder: Path) -> Split:
    """The converted refer split in ``folder`` (``data/real/<set>/<split>``), its images checked on disk."""
    from vlrepro.data.real.refer import REFER_SETS

    folder = Path(folder)
    if not (folder / "records.json").is_file():
        name, split = folder.parent.name, folder.name
        refs = [f"<refer>/{d}/refs({by}).p" for n, d, by in REFER_SETS if n == name]
        have = sorted(p.name for p in folder.parent.glob("*") if (p / "records.json").is_file())
        has = f"{name} has the splits {', '.join(have)}" if have else f"no {name} split has been converted"
        raise DatasetError(
            f"{folder}: missing; smcim.source = real reads {name} {split} (smcim.train_sets / eval_sets), which the "
            f"`data` stage converts from data.real.refer ({' or '.join(refs) or 'no refer set of that name'} with "
            f"its instances.json); {has}. Set data.real.refer and re-run the `data` stage (dvc repro data), or "
            f"leave {name} out of smcim.train_sets / eval_sets ({README_HINT})"
        )
    split = load_split(folder)
    check_images(split.meta, split.records, str(folder))
    return split


def normalised_to_original(boxes: Tensor, letterbox: Tensor) -> Tensor:
    """Normalised xyxy boxes (M, 4) in the letterboxed input -> pixels of each original image (clipped to it);
    ``letterbox`` (M, 7): each box's ``Letterbox.as_row``."""
    rows = letterbox.double().numpy()
    return torch.from_numpy(boxes_to_original(boxes.double().numpy() * rows[:, 2:3], rows)).float()


class RealImageExpressions(ImageExpressions):
    """``ImageExpressions`` of a real split: each image read from its file and letterboxed when drawn.

    ``boxes_px`` are the targets in original pixels (what Acc@0.5 is scored against), ``boxes_in`` the same
    boxes in the letterboxed input (what the model is trained on).
    """

    def __init__(self, split_dir: Path, tokenizer: Any, p: SMCIMParams, augment: bool):
        split = real_split(split_dir)
        self.meta, self.where = split.meta, str(split_dir)
        self.size = p.image_size
        self.records = split.records
        self.texts = [r.text for r in self.records]
        self.boxes_px = torch.tensor([r.boxes[0] for r in self.records], dtype=torch.float32)
        self.letterbox = torch.tensor([Letterbox.fit(r.width, r.height, self.size).as_row() for r in self.records],
                                      dtype=torch.float32)  # fmt: skip
        self.boxes_in = torch.from_numpy(boxes_to_input(self.boxes_px, self.letterbox)).float()
        self.tokenizer, self.p, self.augment = tokenizer, p, augment

    def image(self, i: int) -> Tensor:
        from vlrepro.models.backbones import images_to_tensor

        return images_to_tensor(load_image(self.meta, self.records[i], self.size, self.where)[0])

    def input_box(self, i: int) -> Tensor:
        return self.boxes_in[i : i + 1]

    def to_pixels(self, boxes: Tensor) -> Tensor:
        return normalised_to_original(boxes, self.letterbox)


def _view_slice(view: ViewParams, idx: slice) -> ViewParams:
    return ViewParams(*(getattr(view, f.name)[idx] for f in fields(ViewParams)))


@torch.no_grad()
def extract_real_split(
    split: Split, folder: Path, cnn: torch.nn.Module, text_encoder: torch.nn.Module, p: SMCIMParams, views: int,
    seed: int, chunk: int = 64,
) -> Features:  # fmt: skip
    """``vlrepro.smcim.features.extract_split`` for a real split (``real_split``): the images are read and encoded
    ``chunk`` at a time (a real split does not fit in memory as pixels), each view's augmentation drawn for
    all images at once as on the world."""
    from vlrepro.models.backbones import images_to_tensor

    records, size = split.records, p.image_size
    files = list(dict.fromkeys(str(r.image) for r in records))
    index = {f: i for i, f in enumerate(files)}
    first: dict[str, Any] = {}  # one record of each image, which load_image reads it by
    for r in records:
        first.setdefault(str(r.image), r)
    image = torch.tensor([index[str(r.image)] for r in records])
    letterbox = torch.tensor([Letterbox.fit(r.width, r.height, size).as_row() for r in records], dtype=torch.float32)
    target_px = torch.tensor([r.boxes[0] for r in records], dtype=torch.float32)
    target_in = torch.from_numpy(boxes_to_input(target_px, letterbox)).float()
    gen = torch.Generator().manual_seed(seed)
    drawn = [None] + [draw_view(len(files), size, p.augment, gen) for _ in range(1, views)]
    maps: list[list[list[Tensor]]] = [[[] for _ in range(views)] for _ in range(LEVELS)]  # level, view, chunk
    for start in range(0, len(files), chunk):
        idx = slice(start, start + chunk)
        pixels = np.stack([load_image(split.meta, first[f], size, str(folder))[0] for f in files[idx]])
        images = images_to_tensor(pixels).to(ENCODE_DTYPE)
        for v, view in enumerate(drawn):
            view_images = images if view is None else apply_view(images, _view_slice(view, idx))
            for k, m in enumerate(encode_images(cnn, view_images, p.model.grid_stride)):
                maps[k][v].append(m)
    boxes, flips = [], []
    for view in drawn:
        if view is None:
            view_boxes, flip = target_in, torch.zeros(len(files), dtype=torch.bool)
        else:
            view_boxes, flip = transform_boxes(target_in, view, image, size), view.flip
        boxes.append(xyxy_to_cxcywh(view_boxes / size))
        flips.append(flip[image])
    texts = [r.text for r in records]
    text, states, mask = encode_view_texts(text_encoder, texts, flips, p)
    return Features(
        levels=[torch.stack([torch.cat(chunks) for chunks in level]) for level in maps], states=states, mask=mask,
        image=image, text=text, boxes=torch.stack(boxes), target_px=target_px,
        size=torch.tensor([[r.width, r.height] for r in records], dtype=torch.float32), texts=texts,
        letterbox=letterbox, image_files=files,
    )  # fmt: skip


def random_object_acc(split: Split, threshold: float = 0.5) -> float:
    """Expected Acc@``threshold`` of picking one of the image's annotated objects at random (its exact box):
    per expression, the share of the objects in ``meta["objects"]`` that hit the target, averaged."""
    objects = split.meta.get("objects")
    if objects is None:
        raise DatasetError(f"{split.meta.get('source', 'a real split')}: the converted split has no objects list "
                           f"(meta['objects']); re-run the `data` stage (dvc repro data) to convert it again")
    hits = []
    for r in split.records:
        if not objects.get(r.image_id):  # the referred object itself is one of them, so this is a broken file
            raise DatasetError(f"{split.meta.get('source')}: image {r.image_id} has no annotated objects in the "
                               f"converted split; re-run the `data` stage (dvc repro data)")
        boxes = torch.tensor(objects[r.image_id], dtype=torch.float32)
        target = torch.tensor([r.boxes[0]], dtype=torch.float32).expand(len(boxes), 4)
        hits.append((paired_iou(boxes, target) >= threshold).float().mean().item())
    return float(np.mean(hits)) if hits else float("nan")
