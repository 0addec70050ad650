"""World data for pre-training: images with their scene graphs, text corpora, and padding collation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlrepro.data.records import Split, load_split

# Train splits whose texts the tokenizer and the MLM see; held-out texts for the MLM metric.
TEXT_TRAIN = ("refcoco", "refcoco+", "refcocog", "flickr", "vg", "captions", "web", "cub")
TEXT_HELD_OUT = (("captions", "test"), ("refcocog", "val"), ("vg", "val"))


@dataclass
class SceneImages:
    """Images of one or more splits with what is in them: uint8 arrays plus one scene graph per image."""

    images: np.ndarray  # (N, H, W, 3) uint8
    instances: np.ndarray  # (N, H, W) uint8, k + 1 where scene object k is visible
    scenes: list[list[dict[str, Any]]]
    meta: dict[str, Any]  # the first split's meta (vocabulary: categories, colours, ...), without the scenes

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def load_scene_images(
    data_dir: Path, sets: tuple[str, ...] | list[str], split: str, limit: int | None = None
) -> SceneImages:
    """The ``split`` images of ``sets``, concatenated in that order (the first ``limit`` only, if given)."""
    parts = [load_split(Path(data_dir) / name / split) for name in sets]
    images = np.concatenate([np.asarray(p.images) for p in parts])
    instances = np.concatenate([np.asarray(p.instances) for p in parts])
    scenes = [s for p in parts for s in p.meta["scenes"]]
    meta = {k: v for k, v in parts[0].meta.items() if k not in ("scenes", "backgrounds")}
    if limit is not None:
        images, instances, scenes = images[:limit], instances[:limit], scenes[:limit]
    return SceneImages(images, instances, scenes, meta)


def split_texts(split: Split) -> list[str]:
    return [r.text for r in split.records if r.text]


def train_texts(data_dir: Path) -> list[str]:
    """Every text of the world's train splits (expressions, captions, region descriptions, species) + det prompts."""
    texts: list[str] = []
    for name in TEXT_TRAIN:
        texts += split_texts(load_split(Path(data_dir) / name / "train"))
    det = load_split(Path(data_dir) / "det" / "train")
    texts += [f"a {c['name']}" for c in det.meta["categories"]]  # every category name occurs at least once
    return texts


def held_out_texts(data_dir: Path, seen: Sequence[str] = ()) -> list[str]:
    """Texts of the held-out splits, without those that also occur in ``seen`` (the grammar repeats short
    sentences, which the MLM would otherwise be scored on after training on them)."""
    seen_lower = {t.lower() for t in seen}
    texts: list[str] = []
    for name, split in TEXT_HELD_OUT:
        texts += [t for t in split_texts(load_split(Path(data_dir) / name / split)) if t.lower() not in seen_lower]
    return texts


def pad_stack(rows: list[Tensor], value: int) -> Tensor:
    """1-D int tensors -> (B, max length), right-padded with ``value``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def pad_texts(rows: list[Tensor], pad_id: int) -> dict[str, Tensor]:
    """Unpadded id rows -> the text encoder's ``{"input_ids", "attention_mask"}`` batch."""
    return {"input_ids": pad_stack(rows, pad_id), "attention_mask": pad_stack([torch.ones_like(r) for r in rows], 0)}
