"""What BLIP trains and is scored on: the frozen ViT's image tokens, caption pairs, the bootstrapped sets.

- ``human``: the captions of the first ``data.human_images`` images of world ``captions/train`` (clean, as
  COCO + VG are to BLIP); ``web``: world ``web/train``, one alt-text per image, a known share of them wrong
  (``meta.noisy``), as BLIP's web crawl.
- The pre-training set is human + web; CapFilt's variants replace the web texts by those the filter keeps
  and/or add the captioner's synthetic caption of each web image (``bootstrap_pairs``).
- Images go through the frozen world-CLIP ViT once (``encode_split``); training reads its tokens.

Real data (``blip.source: real``, the ``paper`` profile): ``captions`` is COCO in Karpathy's split and ``web``
the user's web caption file (``REAL_SETS``), as the `data` stage converted them; each image file is
letterboxed to the ViT's input when it is encoded (``vlrepro.data.images``). Images are numbered per split in
order of first appearance (``vlrepro.data.images.record_images``), as the world's ``images.npy`` rows are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlrepro.blip.config import BLIPParams
from vlrepro.data.images import image_numbers, load_image, open_real_split, record_images
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.records import Record, Split, load_split
from vlrepro.data.world.captions import caption_truth_matrix

# World set -> its conversion under data/real (source: real) and the data.real key(s) behind it.
REAL_SETS = {"captions": ("coco_karpathy", "coco_karpathy and coco_images"),
             "web": ("web_captions", "web_captions and web_images")}  # fmt: skip


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


@torch.no_grad()
def encode_split(visual: torch.nn.Module, split: Split, n: int | None = None, batch: int = 256) -> ImageBank:
    """The frozen ViT's outputs for the first ``n`` images of ``split`` (all by default), in image-number order
    (``record_images``): the world's pixels, or each real file letterboxed to the ViT's input, ``batch`` at a time."""
    if split.images is not None:
        return encode_images(visual, split.images[:n], batch)
    first: dict[int, Record] = {}  # image number -> a record of it, which load_image reads the file by
    for r, i in zip(split.records, record_images(split), strict=True):
        first.setdefault(i, r)
    count = len(first) if n is None else min(n, len(first))
    size, where = visual.config.img_size, f"{split.meta.get('dataset')}/{split.meta.get('split')}"
    if not count:
        raise DatasetError(f"data/real/{where}: no image with a caption; check the file the `data` stage converted "
                           f"({split.meta.get('source', 'its data.real path')})")  # fmt: skip
    parts = [encode_images(visual, np.stack([load_image(split.meta, first[i], size, where)[0]
                                             for i in range(start, min(start + batch, count))]), batch)
             for start in range(0, count, batch)]  # fmt: skip
    return ImageBank(torch.cat([b.tokens for b in parts]), torch.cat([b.pooled for b in parts]))


def bank_bytes(visual: torch.nn.Module, images: int) -> int:
    """The fp32 bytes of an ``ImageBank`` of ``images``: every token of the frozen ViT plus the pooled vector."""
    tokens = visual.num_prefix_tokens + visual.grid[0] * visual.grid[1]
    return 4 * images * (tokens + 1) * visual.embed_dim


def check_bank_fits(visual: torch.nn.Module, images: int, fix: str, share: float = 0.8) -> None:
    """Stop before encoding when the bank would take more than ``share`` of the memory available now, rather
    than after hours of encoding in swap: at paper scale (COCO's 113k training images through a ViT-B/16)
    it is about 70 GB. Encoding holds it twice at its peak (the batches' outputs, then their concatenation).
    ``fix`` says what the user can change."""
    import psutil

    need, free = 2 * bank_bytes(visual, images), psutil.virtual_memory().available
    if need > share * free:
        raise MemoryError(f"encoding the frozen-ViT image bank of {images:,} images needs {need / 1e9:.1f} GB in "
                          f"fp32 at its peak, and {free / 1e9:.1f} GB of memory is available: {fix}")  # fmt: skip


def image_count(split: Split) -> int:
    """How many images ``split`` has (``images.npy`` rows, or distinct real files)."""
    return len(split.images) if split.images is not None else len(image_numbers(split.records))


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


def open_split(data_dir: Path, name: str, split: str, source: str = "world") -> Split:
    """Split ``split`` of set ``name`` (``captions`` or ``web``) under ``data_dir`` (``data/world`` or
    ``data/real``). A real one must have been converted by the `data` stage and have every image file on disk;
    otherwise a ``DatasetError`` names the folder or the missing files and the ``data.real`` key to set."""
    if source == "world":
        folder = Path(data_dir) / name / split
        if not (folder / "records.json").is_file():
            raise FileNotFoundError(f"{folder}/records.json: missing; run the `data` stage (dvc repro data) first")
        return load_split(folder)
    dataset, key = REAL_SETS[name]
    return open_real_split(Path(data_dir) / dataset / split, f"blip.source = real reads {name} {split}", key)


@dataclass
class TrainingImages:
    """The human images, then the web images: rows ``[0, n_human)`` and ``[n_human, n_human + n_web)`` of the
    training ``ImageBank`` (``encode``)."""

    human: Split
    web: Split
    n_human: int
    n_web: int

    def encode(self, visual: torch.nn.Module) -> ImageBank:
        if self.human.images is not None and self.web.images is not None:  # the world: one pass, as ever
            return encode_images(visual, np.concatenate([self.human.images[: self.n_human],
                                                         self.web.images[: self.n_web]]))  # fmt: skip
        check_bank_fits(visual, self.n_human + self.n_web, "lower blip.data.human_images or blip.data.web_images "
                        "in params.yaml, or run on a machine with more memory")  # fmt: skip
        human, web = encode_split(visual, self.human, self.n_human), encode_split(visual, self.web, self.n_web)
        return ImageBank(torch.cat([human.tokens, web.tokens]), torch.cat([human.pooled, web.pooled]))

    def truth(self, rows: list[int], texts: list[str]) -> np.ndarray | None:
        """Bool ``(len(rows), len(texts))``: whether the world says text j is true of training image ``rows[i]``;
        ``None`` when the splits carry no scene graphs (real data)."""
        if any(s.meta.get("scenes") is None for s in (self.human, self.web)):
            return None
        out = np.zeros((len(rows), len(texts)), dtype=bool)
        for split, lo, hi in ((self.human, 0, self.n_human), (self.web, self.n_human, self.n_human + self.n_web)):
            at = [i for i, r in enumerate(rows) if lo <= r < hi]
            if at:
                out[at] = caption_truth_matrix(split, texts, [rows[i] - lo for i in at])
        return out


def training_images(p: BLIPParams, data_dir: Path) -> TrainingImages:
    human, web = (open_split(data_dir, name, "train", p.source) for name in ("captions", "web"))
    n_human, n_web = image_count(human), image_count(web)
    d = p.data
    return TrainingImages(human, web, n_human if d.human_images is None else min(d.human_images, n_human),
                          n_web if d.web_images is None else min(d.web_images, n_web))  # fmt: skip


def web_records(data: TrainingImages) -> list[tuple[int, Record]]:
    """(image number, record) of the web captions of the images in use, in record order (the world: one per
    image; a real web file may give an image several)."""
    return [(i, r) for i, r in zip(record_images(data.web), data.web.records, strict=True) if i < data.n_web]


def web_images(data: TrainingImages) -> list[int]:
    """The numbers of the web images in use that have a caption, in order: one synthetic caption each."""
    return sorted({i for i, _ in web_records(data)})


def human_pairs(data: TrainingImages) -> Pairs:
    pairs = Pairs()
    for i, r in zip(record_images(data.human), data.human.records, strict=True):
        if i < data.n_human:
            pairs.add(i, r.text, "human")
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
    for (i, r), keep in zip(web, keep_web, strict=True):
        if keep:
            pairs.add(data.n_human + i, r.text, "web")
    if b.captioner != "none":
        key = f"{owner}_{b.captioner}"
        if key not in capfilt["synthetic"]:
            raise ValueError(f"the capfilt output has no synthetic captions {key!r}; it has "
                             f"{', '.join(capfilt['synthetic'])}")  # fmt: skip
        texts = capfilt["synthetic"][key]
        keep_synth = capfilt["keep_synthetic"][key] if b.filter else [True] * len(texts)
        for i, text, keep in zip(web_images(data), texts, keep_synth, strict=True):
            if keep:
                pairs.add(data.n_human + i, text, "synthetic")
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
