"""Contrastive (CLIP) pre-training of the dual encoder on world captions, and its two evaluations.

- Training pairs: one item per train image, with one of its captions drawn at random each time it is
  seen. A batch that spans two epochs can hold an image twice; the loss then masks the pair that is not
  on the diagonal, so an image's own caption is never its negative.
- Hard negatives (``clip.hard_negatives``): each caption also gets one copy with an attribute or shape word
  swapped for another value ("a striped red heart" -> "a striped blue heart"), kept only when it is still a
  sentence of the world's grammar and the world says it is false of the image. It joins the image->text
  softmax of its image only, as NegCLIP's swapped captions (Yuksekgonul et al., ICLR 2023): in-batch negatives
  rarely differ from a caption by one attribute, which is what the zero-shot species prompts ("a checkered
  pink heart.") need.
- ``evaluate_retrieval``: image->text and text->image R@1 on held-out captions (captions/test, 5 per image);
  strictly, a retrieved caption counts if it belongs to the query image; leniently (``lenient_*``, world
  splits only), also if the world says it is true of the query image (``data.world.captions``): many world
  captions describe several images ("two boxes on a plain grey background").
- ``evaluate_zero_shot``: classification by the nearest prompt ``"a picture of a {name}."``, without training
  a classifier: the species of cub/test (16-way accuracy) and, on det/test, whether the top-scoring
  category is present in the image (several objects per image). The prompt is the world captions' only form
  that names neither a background nor a count, as CLIP's "a photo of a {label}." is the common frame of its
  web captions; on cub/val it beats the bare ``"a {name}."`` (0.51 vs 0.475 on the recorded CLIP).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from vlrepro.data.records import Split, load_split
from vlrepro.data.world.captions import caption_truth_matrix, is_world_caption
from vlrepro.data.world.vocab import CATEGORY_BY_NAME, COLOURS, PATTERNS, SIZES, WORDS, article, plural
from vlrepro.losses.contrastive import info_nce
from vlrepro.models.backbones import images_to_tensor
from vlrepro.models.clip import DualEncoder
from vlrepro.models.text import encode_rows, special_ids
from vlrepro.pretrain.data import pad_texts
from vlrepro.train import evaluating


def prompt(name: str) -> str:
    """The zero-shot text for a class name: a sentence of the world captions' grammar."""
    return f"a picture of {article(name)} {name}."


# The word kinds a hard negative swaps, and the canonical word of each of their values.
SWAPS: dict[str, dict[str, str]] = {
    "colour": {name: words[0] for name, (_, words) in COLOURS.items()},
    "pattern": {name: words[0] for name, words in PATTERNS.items()},
    "size": {name: words[0] for name, (_, words) in SIZES.items()},
    "category": {name: c.words[0] for name, c in CATEGORY_BY_NAME.items()},
    "categories": {name: plural(c.words[0]) for name, c in CATEGORY_BY_NAME.items()},
}


def attribute_swap(text: str, rng: np.random.Generator) -> str | None:
    """``text`` with one colour, pattern, size or shape word, drawn by ``rng``, replaced by another value's
    canonical word (the article before it agreeing); ``None`` when the text has no such word."""
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if WORDS.get(w.rstrip(".,"), ("",))[0] in SWAPS]
    if not spots:
        return None
    i = spots[rng.integers(len(spots))]
    core = words[i].rstrip(".,")
    kind, value = WORDS[core]
    others = [w for v, w in SWAPS[kind].items() if v != value]
    new = others[rng.integers(len(others))]
    words[i] = new + words[i][len(core) :]
    if i and words[i - 1] in ("a", "an"):
        words[i - 1] = article(new)
    return " ".join(words)


class CaptionPairs(torch.utils.data.Dataset):
    """``(image, caption ids, hard negative ids or None, index)`` per image of the given splits, the caption
    drawn among the image's own; hard negatives (``negatives=True``) as in the module's docstring."""

    def __init__(self, splits: Sequence[Split], tokenizer: Tokenizer, max_len: int, negatives: bool = False):
        images, captions, swapped = [], [], []
        rng = np.random.default_rng(0)  # the negatives are fixed, whatever the training seed
        for split in splits:
            by_image: dict[int, list[str]] = {}
            for r in split.records:
                if r.text:
                    by_image.setdefault(int(r.image), []).append(r.text)
            ids = sorted(by_image)
            images.append(np.asarray(split.images)[ids])
            captions += [by_image[i] for i in ids]
            if negatives:
                swapped += [[_false_swap(split, t, i, rng) for t in by_image[i]] for i in ids]
        self.images = torch.from_numpy(np.concatenate(images))
        self.captions = _encode_nested(tokenizer, captions, max_len)
        self.negatives = _encode_nested(tokenizer, swapped, max_len) if negatives else None
        self.pad_id = special_ids(tokenizer)["[PAD]"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor | None, int]:
        j = np.random.randint(len(self.captions[i]))  # seeded per sample
        negative = self.negatives[i][j] if self.negatives is not None else None
        return images_to_tensor(self.images[i]), self.captions[i][j], negative, i

    def collate(self, items: list[tuple[Tensor, Tensor, Tensor | None, int]]) -> dict[str, Tensor]:
        batch = {
            "images": torch.stack([im for im, _, _, _ in items]),
            **pad_texts([t for _, t, _, _ in items], self.pad_id),
            "image_ids": torch.tensor([i for *_, i in items]),
        }
        if self.negatives is not None:  # a caption without a false swap gets a [PAD] row, masked in the loss
            rows = [n if n is not None else torch.tensor([self.pad_id]) for _, _, n, _ in items]
            negatives = pad_texts(rows, self.pad_id)
            batch |= {"negative_ids": negatives["input_ids"], "negative_mask": negatives["attention_mask"],
                      "has_negative": torch.tensor([n is not None for _, _, n, _ in items])}  # fmt: skip
        return batch


def _false_swap(split: Split, text: str, image: int, rng: np.random.Generator) -> str | None:
    """An attribute swap of ``text`` that the world says is false of ``image`` (one try), else None. A swap
    outside the grammar ("a striped dark background") is refused: the world cannot judge it, and its
    wording alone would give it away."""
    swapped = attribute_swap(text, rng)
    if swapped is None or not is_world_caption(swapped) or caption_truth_matrix(split, [swapped], [image])[0, 0]:
        return None
    return swapped


def _encode_nested(tokenizer: Tokenizer, texts: list[list[str | None]], max_len: int) -> list[list[Tensor | None]]:
    flat = [t for group in texts for t in group if t is not None]
    rows = iter(encode_rows(tokenizer, flat, max_len))
    return [[next(rows) if t is not None else None for t in group] for group in texts]


def clip_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    image_emb, text_emb, scale = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    negative = has_negative = None
    if "negative_ids" in batch:  # under DDP the negatives go through the wrapped model's text tower
        negative = getattr(model, "module", model).encode_text(batch["negative_ids"], batch["negative_mask"])
        has_negative = batch["has_negative"]
    loss = info_nce(image_emb, text_emb, scale, batch["image_ids"], negative, has_negative)
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
        species_emb = _embed_texts(model, [prompt(s) for s in species])
        det_scores = _embed_images(model, np.asarray(det.images)[det_images])
        category_emb = _embed_texts(model, [prompt(c) for c in categories])
    pred = (cub_scores @ species_emb.T).argmax(1)
    cub_acc = (pred == torch.tensor([r.labels[0] for r in cub.records])).float().mean().item()
    best = (det_scores @ category_emb.T).argmax(1).tolist()
    present = [{o["category_id"] for o in det.meta["scenes"][i]} for i in det_images]
    det_top1 = float(np.mean([b in p for b, p in zip(best, present, strict=True)]))
    return {"cub_acc": cub_acc, "det_top1": det_top1}


def load_caption_splits(data_dir: Path, sets: Sequence[str], split: str = "train") -> list[Split]:
    return [load_split(Path(data_dir) / name / split) for name in sets]
