"""ALA's data: the train, val and test splits of a cub set as image, label and bird-mask tensors.

``source: world`` reads the embedded ``data/world/cub``; ``source: real`` reads the `data` stage's conversion
of CUB-200-2011 (``data/real/cub``, from ``data.real.cub`` and ``cub_segmentations``), each image through the
shared real-image path (``vlrepro.data.images``): letterboxed to the CLIP tower's square input, with its bird
mask letterboxed alike, so nothing is distorted and the masks stay aligned with the pixels. A missing image
stops the run with the file and the key to fix (``check_images``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlrepro.data.records import load_split

SPLITS = ("train", "val", "test")


@dataclass
class CUB:
    """One split of a cub set: images (N, 3, H, W) uint8, labels (N,), target masks (N, H, W) bool."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor | slice, device: torch.device | str = "cpu") -> Tensor:
        """Float images in [0, 1] (the backbones' input) of the items ``idx``, on ``device``."""
        return self.images[idx].to(device).float() / 255


def _cub(images: np.ndarray, labels: list[int], masks: np.ndarray, names: list[str]) -> CUB:
    return CUB(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(),
               torch.tensor(labels), torch.from_numpy(np.ascontiguousarray(masks)), names)  # fmt: skip


def load_world_cub(folder: Path) -> CUB:
    split = load_split(Path(folder), mmap=False)
    if split.instances is None:
        raise FileNotFoundError(f"{folder}: no instances.npy (the target masks); re-run the `data` stage")
    masks = np.stack([split.mask(r, 0) for r in split.records])
    names = [s["name"] for s in split.meta["species"]]
    return _cub(split.images, [r.labels[0] for r in split.records], masks, names)


def load_real_cub(folder: Path, size: int) -> CUB:
    """A split of the `data` stage's CUB-200-2011 conversion (``data/real/cub/<split>``), images and bird masks
    letterboxed to ``size`` x ``size``."""
    from vlrepro.data.images import letterbox_mask, load_image, open_real_split
    from vlrepro.data.real.cub import clean_class_name, load_cub_mask
    from vlrepro.data.real.errors import not_set

    folder = Path(folder)
    split = open_real_split(folder, f"ala.source = real reads cub {folder.name}", "cub")
    mask_root = split.meta.get("mask_root")
    if mask_root is None:
        raise not_set("cub_segmentations", "the segmentations/ folder (ALA scores maps against the bird masks)")
    images, masks = [], []
    for r in split.records:
        image, lb = load_image(split.meta, r, size, str(folder))
        images.append(image)
        masks.append(letterbox_mask(load_cub_mask(mask_root, r), lb))
    names = [clean_class_name(c) for c in split.meta["classes"]]
    return _cub(np.stack(images), [r.labels[0] for r in split.records], np.stack(masks), names)


def load_cub(source: str, data_dir: Path, size: int) -> tuple[CUB, CUB, CUB]:
    """train, val and test of the world's cub set (``data_dir`` = ``data/world``) or of CUB-200-2011
    (``data/real``, images at ``size`` px)."""
    if source == "real":
        return tuple(load_real_cub(Path(data_dir) / "cub" / s, size) for s in SPLITS)
    return tuple(load_world_cub(Path(data_dir) / "cub" / s) for s in SPLITS)
