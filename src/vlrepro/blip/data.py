"""What BLIP trains and is scored on: the frozen ViT's image tokens, caption pairs, the bootstrapped sets.

- ``human``: the captions of the first ``data.human_images`` images of world ``captions/train`` (clean, as
  COCO + VG are to BLIP); ``web``: world ``web/train``, one alt-text per image, a known share of them wrong
  (``meta.noisy``), as BLIP's web crawl.
- The pre-training set is human + web; CapFilt's variants replace the web texts by those the filter keeps
  and/or add the captioner's synthetic caption of each web image (``bootstrap_pairs``).
- Images go through the frozen world-CLIP ViT once (``encode_images``); training reads its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlrepro.blip.config import BLIPParams
from vlrepro.data.records import Split, load_split
from vlrepro.data.world.captions import caption_truth_matrix


@dataclass
class ImageBank:
    """The frozen ViT's outputs for a list of images: tokens ``(N, 1 + P, D)`` and CLIP's pooled ``(N, D)``."""

    tokens: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: Tensor | list[int] | slice) -> ImageBank:
        return ImageBank(self.tokens[index], self.pooled[index])


@torch.no_grad()
def encode_images(visual: torch.nn.Module, images: np.ndarray, batch: int = 256) -> ImageBank:
    """Run the frozen ViT over ``(N, H, W, 3)`` uint8 images (eval mode)."""
    visual.eval()
    tokens, pooled = [], []
    for start in range(0, len(images), batch):
        x = torch.tensor(np.asarray(images[start : start + batch])).permute(0, 3, 1, 2).float() / 255
        t = visual(x)
        tokens.append(t)
        pooled.append(visual.pool(t))
    return ImageBank(torch.cat(tokens), torch.cat(pooled))


@dataclass
class Pairs:
    """Image-text pairs: ``image[i]`` is a row of the training ``ImageBank``; ``source`` human|web|synthetic."""

    image: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)

    def add(self, image: int, text: str, source: str) -> None:
        self.image.append(image)
        self.texts.append(text)
        self.source.append(source)

    def __len__(self) -> int:
        return len(self.texts)


def world_split(data_dir: Path, name: str, split: str) -> Split:
    folder = Path(data_dir) / name / split
    if not (folder / "records.json").is_file():
        raise FileNotFoundError(f"{folder}/records.json: missing; run the `data` stage (dvc repro data) first")
    return load_split(folder)


@dataclass
class TrainingImages:
    """The human images, then the web images: rows ``[0, n_human)`` and ``[n_human, n_human + n_web)``."""

    images: np.ndarray
    n_human: int
    human: Split
    web: Split

    def truth(self, rows: list[int], texts: list[str]) -> np.ndarray | None:
        """Bool ``(len(rows), len(texts))``: whether the world says text j is true of training image ``rows[i]``;
        ``None`` when the splits carry no scene graphs (real data)."""
        if any(s.meta.get("scenes") is None for s in (self.human, self.web)):
            return None
        out = np.zeros((len(rows), len(texts)), dtype=bool)
        for split, lo, hi in ((self.human, 0, self.n_human), (self.web, self.n_human, len(self.images))):
            at = [i for i, r in enumerate(rows) if lo <= r < hi]
            if at:
                out[at] = caption_truth_matrix(split, texts, [rows[i] - lo for i in at])
        return out


def training_images(p: BLIPParams, data_dir: Path) -> TrainingImages:
    human, web = world_split(data_dir, "captions", "train"), world_split(data_dir, "web", "train")
    n_human = min(p.data.human_images, len(human.images))
    n_web = len(web.images) if p.data.web_images is None else min(p.data.web_images, len(web.images))
    images = np.concatenate([human.images[:n_human], web.images[:n_web]])
    return TrainingImages(images, n_human, human, web)


def web_records(data: TrainingImages) -> list:
    """The web records of the images in use, in image order (one per image)."""
    n_web = len(data.images) - data.n_human
    return [r for r in data.web.records if r.image < n_web]


def human_pairs(data: TrainingImages) -> Pairs:
    pairs = Pairs()
    for r in data.human.records:
        if r.image < data.n_human:
            pairs.add(int(r.image), r.text, "human")
    return pairs


def bootstrap_pairs(p: BLIPParams, data: TrainingImages, capfilt: dict | None) -> Pairs:
    """Human pairs + the web pairs as ``bootstrap`` says: raw or filtered web texts, with or without the
    captioner's synthetic caption of each web image (filtered too when the filter is on). ``capfilt`` is
    what ``vlrepro.blip.capfilt`` wrote for this seed (``None`` without CapFilt)."""
    b = p.bootstrap
    pairs = human_pairs(data)
    web = web_records(data)
    if (b.filter or b.captioner != "none") and capfilt is None:
        raise ValueError("blip.bootstrap uses CapFilt (filter or captioner) but no capfilt output was given; run the "
                         "blip_capfilt stage of this seed first")  # fmt: skip
    owner = "shared" if b.shared else "decoupled"
    keep_web = capfilt["keep_web"][owner] if b.filter else [True] * len(web)
    for r, keep in zip(web, keep_web, strict=True):
        if keep:
            pairs.add(data.n_human + int(r.image), r.text, "web")
    if b.captioner != "none":
        key = f"{owner}_{b.captioner}"
        if key not in capfilt["synthetic"]:
            raise ValueError(f"the capfilt output has no synthetic captions {key!r}; it has "
                             f"{', '.join(capfilt['synthetic'])}")  # fmt: skip
        texts = capfilt["synthetic"][key]
        keep_synth = capfilt["keep_synthetic"][key] if b.filter else [True] * len(texts)
        for r, text, keep in zip(web, texts, keep_synth, strict=True):
            if keep:
                pairs.add(data.n_human + int(r.image), text, "synthetic")
    return pairs


class PairBatches(torch.utils.data.Dataset):
    """Indices into ``pairs``; ``collate`` makes the batch ``blip_losses`` reads. With ``truth`` (the world's
    ``TrainingImages.truth``) the batch carries ``matches``: which of its texts are true of which of its images."""

    def __init__(self, pairs: Pairs, bank: ImageBank, tokenize, max_len: int, truth=None):  # noqa: ANN001
        self.pairs, self.bank, self.truth = pairs, bank, truth
        enc = tokenize(pairs.texts, max_len)
        self.ids, self.mask = enc["input_ids"], enc["attention_mask"]
        self.image = torch.tensor(pairs.image)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, index: list[int]) -> dict[str, Tensor]:
        idx = torch.tensor(index)
        mask = self.mask[idx]
        length = int(mask.sum(1).max())
        rows = self.image[idx]
        batch = {"input_ids": self.ids[idx, :length], "attention_mask": mask[:, :length], "image_ids": rows,
                 "image_tokens": self.bank.tokens[rows], "image_pooled": self.bank.pooled[rows]}  # fmt: skip
        matches = None if self.truth is None else self.truth(rows.tolist(), [self.pairs.texts[i] for i in index])
        if matches is not None:
            batch["matches"] = torch.from_numpy(matches)
        return batch
