"""Contrastive (CLIP) pre-training of the dual encoder on world captions, and its two evaluations.

- Training pairs: one item per train image, with one of its captions drawn at random each time it is
  seen. A batch that spans two epochs can hold an image twice; the loss then masks the pair that is not
  on the diagonal, so an image's own caption is never its negative.
- ``evaluate_retrieval``: image->text and text->image R@1 on held-out captions (captions/test, 5 per image);
  strictly, a retrieved caption counts if it belongs to the query image; leniently (``lenient_*``, world
  splits only), also if the world says it is true of the query image (``data.world.captions``): many world
  captions describe several images ("two boxes on a plain grey background").
- ``evaluate_zero_shot``: classification by the nearest prompt ``"a {name}."``, without training a
  classifier: the species of cub/test (16-way accuracy) and, on det/test, whether the top-scoring
  category is present in the image (several objects per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from vlrepro.data.records import Split, load_split
from vlrepro.data.world.captions import caption_truth_matrix
from vlrepro.losses.contrastive import info_nce
from vlrepro.models.backbones import images_to_tensor
from vlrepro.models.clip import DualEncoder
from vlrepro.models.text import encode_rows, special_ids
from vlrepro.pretrain.data import pad_texts
from vlrepro.train import evaluating

PROMPT = "a {}."


class CaptionPairs(torch.utils.data.Dataset):
    """``(image, caption ids)`` per image of the given splits, the caption drawn among the image's own."""

    def __init__(self, splits: Sequence[Split], tokenizer: Tokenizer, max_len: int):
        images, captions = [], []
        for split in splits:
            by_image: dict[int, list[str]] = {}
            for r in split.records:
                if r.text:
                    by_image.setdefault(int(r.image), []).append(r.text)
            ids = sorted(by_image)
            images.append(np.asarray(split.images)[ids])
            captions += [by_image[i] for i in ids]
        self.images = torch.from_numpy(np.concatenate(images))
        rows = encode_rows(tokenizer, [t for texts in captions for t in texts], max_len)
        bounds = np.cumsum([0, *map(len, captions)])
        self.captions = [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.pad_id = special_ids(tokenizer)["[PAD]"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        options = self.captions[i]
        return images_to_tensor(self.images[i]), options[np.random.randint(len(options))], i  # seeded per sample

    def collate(self, items: list[tuple[Tensor, Tensor, int]]) -> dict[str, Tensor]:
        return {
            "images": torch.stack([im for im, _, _ in items]),
            **pad_texts([t for _, t, _ in items], self.pad_id),
            "image_ids": torch.tensor([i for _, _, i in items]),
        }


def clip_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    image_emb, text_emb, scale = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    loss = info_nce(image_emb, text_emb, scale, batch["image_ids"])
    return {"loss": loss, "temperature": 1.0 / scale.detach()}


@torch.no_grad()
def _embed_images(model: DualEncoder, images: np.ndarray, batch: int = 256) -> Tensor:
    device = model.image_proj.weight.device
    out = [model.encode_image(images_to_tensor(images[s : s + batch]).to(device)) for s in range(0, len(images), batch)]
    return torch.cat(out).cpu()


@torch.no_grad()
def _embed_texts(model: DualEncoder, texts: Sequence[str], batch: int = 512) -> Tensor:
    out = [model.encode_prompts(texts[s : s + batch]) for s in range(0, len(texts), batch)]
    return torch.cat(out).cpu()


@torch.no_grad()
def evaluate_retrieval(model: DualEncoder, split: Split) -> dict[str, float]:
    """``{"i2t_r1", "t2i_r1", "r1"}`` over the images of ``split`` and all their captions, and the
    ``lenient_`` ones when ``split`` carries the world's scene graphs (see the module docstring)."""
    records = [r for r in split.records if r.text]
    image_ids = sorted({int(r.image) for r in records})
    row = {img: k for k, img in enumerate(image_ids)}
    owner = torch.tensor([row[int(r.image)] for r in records])
    with evaluating(model):
        images = _embed_images(model, np.asarray(split.images)[image_ids])
        texts = _embed_texts(model, [r.text for r in records])
    sims = images @ texts.T
    i2t = (owner[sims.argmax(dim=1)] == torch.arange(len(image_ids))).float().mean().item()
    t2i = (sims.argmax(dim=0) == owner).float().mean().item()
    out = {"i2t_r1": i2t, "t2i_r1": t2i, "r1": (i2t + t2i) / 2}
    if not all(k in split.meta for k in ("scenes", "backgrounds", "image_size", "language")):  # not the world
        return out
    true = torch.from_numpy(caption_truth_matrix(split, [r.text for r in records], image_ids))  # (images, texts)
    true[owner, torch.arange(len(records))] = True  # a caption is always a hit for its own image
    i2t_l = true[torch.arange(len(image_ids)), sims.argmax(dim=1)].float().mean().item()
    t2i_l = true[sims.argmax(dim=0), torch.arange(len(records))].float().mean().item()
    return out | {"lenient_i2t_r1": i2t_l, "lenient_t2i_r1": t2i_l, "lenient_r1": (i2t_l + t2i_l) / 2}


@torch.no_grad()
def evaluate_zero_shot(model: DualEncoder, cub: Split, det: Split) -> dict[str, float]:
    """``{"cub_acc", "det_top1"}``: species accuracy on ``cub``; share of ``det`` images whose best category is
    present."""
    species = [s["name"] for s in cub.meta["species"]]
    categories = [c["name"] for c in det.meta["categories"]]
    det_images = sorted({int(r.image) for r in det.records})
    with evaluating(model):
        cub_scores = _embed_images(model, np.asarray(cub.images)[[int(r.image) for r in cub.records]])
        species_emb = _embed_texts(model, [PROMPT.format(s) for s in species])
        det_scores = _embed_images(model, np.asarray(det.images)[det_images])
        category_emb = _embed_texts(model, [PROMPT.format(c) for c in categories])
    pred = (cub_scores @ species_emb.T).argmax(1)
    cub_acc = (pred == torch.tensor([r.labels[0] for r in cub.records])).float().mean().item()
    best = (det_scores @ category_emb.T).argmax(1).tolist()
    present = [{o["category_id"] for o in det.meta["scenes"][i]} for i in det_images]
    det_top1 = float(np.mean([b in p for b, p in zip(best, present, strict=True)]))
    return {"cub_acc": cub_acc, "det_top1": det_top1}


def load_caption_splits(data_dir: Path, sets: Sequence[str], split: str = "train") -> list[Split]:
    return [load_split(Path(data_dir) / name / split) for name in sets]
