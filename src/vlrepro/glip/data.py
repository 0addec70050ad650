"""GLIP's training samples from world splits, and a detection split as COCO ground truth.

Every sample is an image, a text and its boxes, each box positive for the tokens of some character spans
of the text (``prompts.span_map``), so detection and grounding data train the same way:

- detection (``det``): the text is a class-list prompt drawn anew at every visit (``prompts.training_prompt``:
  the image's base classes plus sampled base negatives); a box is positive for its class name. Boxes of novel
  classes are dropped and their objects stay unlabelled background: GLIP's zero-shot concepts are absent
  from its detection data.
- grounding (``flickr``, ``vg``): the text is the caption or region description; a box is positive for every
  phrase that names it (a region description is one phrase).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from vlrepro.data.images import load_image
from vlrepro.data.records import Record, Split
from vlrepro.glip.prompts import span_map, training_prompt
from vlrepro.models.backbones import images_to_tensor
from vlrepro.models.text import encode

Spans = list[list[tuple[int, int]]]  # per box, the character spans of the text that name it


def split_pixels(split: Split, images: Sequence[int]) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` pixels of the image numbers ``images``: rows of the world's ``images.npy``, or a
    real split's files letterboxed to its input size (``vlrepro.glip.real``)."""
    if split.images is not None:
        return np.asarray(split.images)[list(images)]
    files, size = split.meta["files"], split.meta["image_size"]
    return np.stack([load_image(split.meta, Record(image_id=files[i]["image"], image=files[i]["image"],
                                                   width=files[i]["width"], height=files[i]["height"]), size,
                                    split.meta["where"])[0] for i in images])  # fmt: skip


def category_names(split: Split) -> list[str]:
    """The class names of a detection split, indexed by category id."""
    return [c["name"] for c in sorted(split.meta["categories"], key=lambda c: c["id"])]


def base_ids(split: Split) -> list[int]:
    return [int(c) for c in split.meta["base_category_ids"]]


def novel_ids(split: Split) -> list[int]:
    return [int(c) for c in split.meta["novel_category_ids"]]


def grounding_target(record: Record) -> tuple[list[tuple[float, ...]], Spans]:
    """A grounding record's boxes and, per box, the spans of the phrases that name it."""
    spans: Spans = [[] for _ in record.boxes]
    for phrase in record.phrases:
        for b in phrase.box_ids:
            spans[b].append((phrase.start, phrase.end))
    keep = [i for i, s in enumerate(spans) if s]
    return [record.boxes[i] for i in keep], [spans[i] for i in keep]


class GroundingSamples(torch.utils.data.Dataset):
    """``(image, text, boxes, spans)`` items from detection and grounding splits (see the module docstring)."""

    def __init__(self, splits: Sequence[Split], tokenizer: Tokenizer, max_tokens: int, detection_share: float = 0.5):
        """``detection_share``: when detection and grounding splits are mixed, the detection images are repeated
        so that about this share of the samples are detection prompts (the grounding sets are larger)."""
        self.splits, self.tokenizer, self.max_tokens = list(splits), tokenizer, max_tokens
        detection, grounding = [], []
        for k, split in enumerate(self.splits):
            if "base_category_ids" in split.meta:
                detection += [(k, i) for i in range(len(split.records))]
            else:
                grounding += [(k, i) for i, r in enumerate(split.records) if r.phrases]
        repeat = 1
        if detection and grounding and 0 < detection_share < 1:
            repeat = max(1, round(detection_share / (1 - detection_share) * len(grounding) / len(detection)))
        self.index: list[tuple[int, int]] = detection * repeat + grounding

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, str, Tensor, Spans]:
        k, j = self.index[i]
        split, record = self.splits[k], self.splits[k].records[j]
        if "base_category_ids" in split.meta:
            names, base = category_names(split), base_ids(split)
            kept = [(b, c) for b, c in zip(record.boxes, record.labels, strict=True) if c in base]
            rng = np.random.default_rng(int(torch.randint(2**31, ())))  # seeded per sample by the training loop
            prompt = training_prompt(names, [c for _, c in kept], rng, self.tokenizer, self.max_tokens, base)
            span_of = dict(zip(prompt.classes, prompt.spans, strict=True))
            text, boxes, spans = prompt.text, [b for b, _ in kept], [[span_of[c]] for _, c in kept]
        else:
            text, (boxes, spans) = record.text, grounding_target(record)
        image = images_to_tensor(split_pixels(split, [int(record.image)])[0])  # a copy: the split is read-only
        return image, text, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), spans

    def collate(self, items: list[tuple[Tensor, str, Tensor, Spans]]) -> dict[str, Any]:
        enc = encode(self.tokenizer, [t for _, t, _, _ in items], self.max_tokens)
        length = enc["input_ids"].shape[1]
        return {
            "images": torch.stack([im for im, _, _, _ in items]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "boxes": [b for _, _, b, _ in items],  # pixels, x1y1x2y2
            "maps": [span_map(self.tokenizer, t, s, length) for _, t, _, s in items],  # (boxes, L) per item
        }


def coco_ground_truth(split: Split, category_ids: Sequence[int], images: Sequence[int] | None = None) -> dict:
    """A COCO instances document of ``split``'s boxes of ``category_ids`` (image ids = image indices)."""
    wanted, chosen = set(category_ids), None if images is None else set(images)
    names = category_names(split)
    docs_images, annotations = {}, []
    for r in split.records:
        image = int(r.image)
        if chosen is not None and image not in chosen:
            continue
        docs_images[image] = {"id": image, "file_name": r.image_id, "width": int(r.width), "height": int(r.height)}
        for (x1, y1, x2, y2), c in zip(r.boxes, r.labels, strict=True):
            if c in wanted:
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(c),
                                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        # COCO's crowd regions (real data, letterboxed like the boxes): COCOeval ignores detections on them
        for (x1, y1, x2, y2), c in zip(r.meta.get("crowd_boxes", ()), r.meta.get("crowd_labels", ()), strict=True):
            if c in wanted:
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(c),
                                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 1})  # fmt: skip
    return {
        "images": [docs_images[i] for i in sorted(docs_images)],
        "annotations": annotations,
        "categories": [{"id": c, "name": names[c]} for c in sorted(wanted)],
    }
