"""AMC's data: region descriptions with box masks for training, phrase/expression sets for the pointing game.

Training samples (``RegionPairs``): one world ``vg`` region description with its single box; the box is
turned into a pixel mask, and image and mask are augmented together (random crop resized back, flip,
brightness/contrast jitter, optional greyscale) so the mask keeps covering the region. A flip also swaps
'left' and 'right' in the text, which would otherwise describe the wrong object. Only a seeded
``box_share`` of the regions keep their mask (``has_box``): the data-efficiency sweep.

Evaluation samples (``GroundingSet``): Flickr one per phrase (query = the phrase, hit inside any of its
boxes), RefCOCO+ one per expression. Proposals for the ranking metric are every object box of the scene
(an oracle detector: the world has exact boxes); on real data every annotated box of the image (RefCOCO+:
its COCO objects; Flickr30k Entities: the boxes of all its captions' phrases).

Real data (``amc.source: real``, the ``paper`` profile). The sets keep their world names in params and
metrics (``vg``, ``flickr``, ``refcoco+``, ``captions``) and are read from the `data` stage's conversions
(``REAL_SETS``: Visual Genome, Flickr30k Entities, RefCOCO+, COCO Karpathy captions), every image file
checked before any compute (``open_split``). An image is letterboxed to the ViT's input size
(``vlrepro.data.images``) and its boxes and masks are mapped alike. The pointing game is scored in those
input pixels rather than mapped back to the original ones (as ``vlrepro.data.images`` does for boxes): the
map is a scaling plus a shift, so a point lies inside a box in one exactly when it does in the other, and a
point in the padding misses every box either way.

Controls for the learning gates, chosen here from the data alone (no model), so every variant and seed is
judged on the same pairs:

- ``other_texts``: per query, another phrase of the *same image* (``other_phrases``). Scoring its heatmap
  against the query's boxes measures what a model gets without reading the phrase: one that ignores the
  text draws the same map for both. The other phrase must differ in text *and* refer to none of the query's
  boxes; otherwise ("a dome" / "a pink dome" on one object) a model that grounds perfectly would also hit
  with it and the control would reward nothing. It is picked among all queries of the split, not only the
  first ``limit``: the limit can cut an image's phrases in two.
- ``negative_texts``: per query, a text of a randomly chosen *other* image that is not true of the query's
  image (``itm_negatives``): the negative of a 1:1 image-text matching test. Drawn with a generator seeded
  from the split name only, not the run's seed, so that every run sees the same pairs.
- ``captions`` (Flickr-style splits): the whole captions the phrases come from, each with its image and a
  caption of another image that the world says is not true of it: ALBEF's own matching test, on image-caption
  pairs (``MatchPairs``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor

from vlrepro.amc.config import REAL_SETS, AugmentParams
from vlrepro.data.images import Letterbox, image_numbers, load_image, open_real_split, record_images
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.records import Split, load_split
from vlrepro.data.world.captions import caption_truth_matrix
from vlrepro.data.world.resolver import ParseError, resolve
from vlrepro.losses.amc import box_masks
from vlrepro.models.backbones import images_to_tensor
from vlrepro.models.text import encode_rows, special_ids
from vlrepro.pretrain.data import pad_stack, pad_texts
from vlrepro.pretrain.mlm import IGNORE, mask_tokens
from vlrepro.transforms import swap_left_right


def augment(image: Tensor, mask: Tensor, cfg: AugmentParams) -> tuple[Tensor, Tensor, bool]:
    """Jointly augment ``image`` (3, H, W) in [0, 1] and ``mask`` (H, W); returns them and whether it flipped.

    Draws from torch's global RNG (the training loop seeds it per sample).
    """
    _, h, w = image.shape
    if cfg.crop_scale < 1:
        s = cfg.crop_scale + (1 - cfg.crop_scale) * float(torch.rand(()))
        ch, cw = max(1, round(h * s)), max(1, round(w * s))
        y0 = int(torch.randint(h - ch + 1, ()))
        x0 = int(torch.randint(w - cw + 1, ()))
        image = F.interpolate(image[None, :, y0 : y0 + ch, x0 : x0 + cw], size=(h, w), mode="bilinear",
                              align_corners=False)[0]
        mask = F.interpolate(mask[None, None, y0 : y0 + ch, x0 : x0 + cw], size=(h, w), mode="nearest")[0, 0]
    flipped = cfg.flip and bool(torch.rand(()) < 0.5)
    if flipped:
        image, mask = image.flip(-1), mask.flip(-1)
    if cfg.jitter > 0:
        b = 1 + cfg.jitter * (2 * float(torch.rand(())) - 1)
        c = 1 + cfg.jitter * (2 * float(torch.rand(())) - 1)
        mean = image.mean()
        image = (((image - mean) * c + mean) * b).clamp(0, 1)
    if cfg.grey_prob > 0 and bool(torch.rand(()) < cfg.grey_prob):
        grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
        image = grey.expand(3, -1, -1).clone()
    return image, mask, flipped


class RegionPairs(torch.utils.data.Dataset):
    """``vg`` regions: image, text ids (and an MLM-masked copy), box mask, has_box, image index.

    With ``boxes=False`` every record with a text is a pair and none has a box (all-zero mask): the
    image-caption pairs of the ALBEF pre-training phase. ``image_ids`` (``Record.image`` -> number) sets the
    ids that tell a batch's images apart, for several splits in a ``ConcatDataset`` (``shared_image_numbers``);
    by default the image's index in the split. A real split (no ``images.npy``) is read from its files, each
    letterboxed to ``image_size`` with its box.
    """

    def __init__(
        self,
        split: Split,
        tokenizer: Tokenizer,
        max_len: int,
        augment_cfg: AugmentParams,
        mlm_prob: float,
        box_share: float = 1.0,
        box_seed: int = 0,
        limit: int | None = None,
        boxes: bool = True,
        image_ids: Mapping[int | str, int] | None = None,
        image_size: int | None = None,
    ):
        records = [r for r in split.records[:limit] if (r.boxes if boxes else r.text)]
        if not records:
            raise ValueError(f"no {'region with a box' if boxes else 'text'} in the training split")
        self.records, self.meta, self.size = records, split.meta, image_size
        if split.images is not None:
            self.images: torch.Tensor | None = torch.from_numpy(np.array(split.images))
            self.index = torch.tensor([int(r.image) for r in records])
            box_rows = [r.boxes[0] if boxes else (0.0, 0.0, 0.0, 0.0) for r in records]
        else:
            if image_size is None:
                raise ValueError("RegionPairs of a real split (image files) needs image_size, the model's input")
            self.images = None
            files = image_numbers(records)
            self.index = torch.tensor([files[str(r.image)] for r in records])
            box_rows = [tuple(Letterbox.fit(r.width, r.height, image_size).to_input([r.boxes[0]])[0]) if boxes
                        else (0.0, 0.0, 0.0, 0.0) for r in records]  # fmt: skip
        self.image_ids = self.index if image_ids is None else torch.tensor([image_ids[r.image] for r in records])
        self.boxes = torch.tensor(box_rows, dtype=torch.float32)  # an empty box: an all-zero mask
        self.ids = encode_rows(tokenizer, [r.text for r in records], max_len)
        self.flipped_ids = encode_rows(tokenizer, [swap_left_right(r.text) for r in records], max_len)
        n_box = (max(1, round(box_share * len(records))) if box_share > 0 else 0) if boxes else 0
        chosen = np.random.default_rng([box_seed, 7]).permutation(len(records))[:n_box]
        self.has_box = torch.zeros(len(records), dtype=torch.bool)
        self.has_box[torch.from_numpy(chosen)] = True
        sp = special_ids(tokenizer)
        self.pad_id, self.mask_id = sp["[PAD]"], sp["[MASK]"]
        self.special = torch.tensor([sp["[CLS]"], sp["[SEP]"], sp["[PAD]"]])
        self.vocab_size = tokenizer.get_vocab_size()
        self.augment_cfg, self.mlm_prob = augment_cfg, mlm_prob

    def __len__(self) -> int:
        return len(self.index)

    def image(self, i: int) -> Tensor:
        """Pair ``i``'s image, float (3, H, W) in [0, 1]."""
        if self.images is not None:
            return images_to_tensor(self.images[self.index[i]])
        pixels, _ = load_image(self.meta, self.records[i], self.size, _where(self.meta))  # type: ignore[arg-type]
        return images_to_tensor(pixels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        image = self.image(i)
        mask = box_masks(self.boxes[i : i + 1], image.shape[1], image.shape[2])[0]
        image, mask, flipped = augment(image, mask, self.augment_cfg)
        ids = self.flipped_ids[i] if flipped else self.ids[i]
        mlm_ids, labels = mask_tokens(ids, ~torch.isin(ids, self.special), self.mask_id, self.vocab_size,
                                      self.mlm_prob)
        return {"image": image, "mask": mask, "ids": ids, "mlm_ids": mlm_ids, "mlm_labels": labels,
                "has_box": self.has_box[i], "image_id": self.image_ids[i]}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {
            "images": torch.stack([it["image"] for it in items]),
            "masks": torch.stack([it["mask"] for it in items]),
            **pad_texts([it["ids"] for it in items], self.pad_id),
            "mlm_ids": pad_stack([it["mlm_ids"] for it in items], self.pad_id),
            "mlm_labels": pad_stack([it["mlm_labels"] for it in items], IGNORE),
            "has_box": torch.stack([it["has_box"] for it in items]),
            "image_ids": torch.stack([it["image_id"] for it in items]),
        }


@dataclass(frozen=True)
class MatchPairs:
    """Image-text pairs of a 1:1 matching test: ``texts[i]`` is true of image ``image_index[i]`` and
    ``negatives[i]`` (``None``: none found) is a text of another image that is not."""

    image_index: list[int]
    texts: list[str]
    negatives: list[str | None]


@dataclass
class GroundingSet:
    """Queries of one evaluation split: image index, text, ground-truth boxes, proposal boxes, and per query
    the texts of its two controls (``None`` where the split has none; see the module docstring)."""

    name: str
    images: np.ndarray  # (N, H, W, 3) uint8
    image_index: list[int]
    texts: list[str]
    boxes: list[list[tuple[float, float, float, float]]]
    proposals: list[list[tuple[float, float, float, float]]]
    other_texts: list[str | None] | None = None  # another phrase of the same image (pointing control)
    negative_texts: list[str | None] | None = None  # a text of another image, not true of this one (ITM)
    captions: MatchPairs | None = None  # whole captions of the queries' images (Flickr-style splits)

    def __post_init__(self) -> None:
        n = len(self.texts)
        self.other_texts = [None] * n if self.other_texts is None else self.other_texts
        self.negative_texts = [None] * n if self.negative_texts is None else self.negative_texts
        if not len(self.image_index) == len(self.boxes) == len(self.proposals) == n:
            raise ValueError(f"{self.name}: image_index, texts, boxes and proposals differ in length")
        if len(self.other_texts) != n or len(self.negative_texts) != n:
            raise ValueError(f"{self.name}: other_texts / negative_texts need one entry per query ({n})")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, keep: Sequence[int], texts: Sequence[str] | None = None) -> GroundingSet:
        """The queries ``keep`` (in that order), with their texts replaced by ``texts`` if given: e.g. the
        other phrases, scored against the original queries' boxes."""
        return GroundingSet(
            self.name, self.images, [self.image_index[i] for i in keep],
            [self.texts[i] for i in keep] if texts is None else list(texts),
            [self.boxes[i] for i in keep], [self.proposals[i] for i in keep],
        )  # fmt: skip


def _norm(text: str) -> str:
    """Texts compare case- and whitespace-insensitively: 'A dome' and 'a  dome' are the same phrase."""
    return " ".join(text.lower().split())


def other_phrases(
    image_index: Sequence[int], texts: Sequence[str], boxes: Sequence[Sequence[Sequence[float]]]
) -> list[int | None]:
    """Per query, the index of another query of the same image whose text differs and whose boxes share none
    with the query's (boxes compared by coordinates: two captions name one object with the same box); the
    first such query after it in order, wrapping around to the image's earlier ones. ``None`` if there is none.
    """
    by_image: dict[int, list[int]] = {}
    for i, image in enumerate(image_index):
        by_image.setdefault(image, []).append(i)
    position = {i: k for group in by_image.values() for k, i in enumerate(group)}
    out: list[int | None] = []
    for i, image in enumerate(image_index):
        group, k = by_image[image], position[i]
        mine, text = {tuple(b) for b in boxes[i]}, _norm(texts[i])
        out.append(next((j for j in group[k + 1 :] + group[:k]
                         if _norm(texts[j]) != text and mine.isdisjoint(tuple(b) for b in boxes[j])), None))
    return out


def itm_negatives(
    image_index: Sequence[int],
    texts: Sequence[str],
    queries: int,
    seed: int | Sequence[int],
    linked: Callable[[str, int], bool] | None = None,
    tries: int = 100,
) -> list[str | None]:
    """For each of the first ``queries`` queries: a text of a uniformly drawn *other* image (then a uniform
    text of it) that is not linked to the query's image: not one of that image's own texts, and not
    ``linked(text, image)`` (the world's resolver: the text denotes an object there, so the pair would be a
    true match). Up to ``tries`` draws, else ``None``. ``image_index``/``texts`` are the whole split's queries.
    """
    rng = np.random.default_rng(seed)
    texts_of: dict[int, list[str]] = {}
    for image, text in zip(image_index, texts, strict=True):
        texts_of.setdefault(image, []).append(text)
    images = sorted(texts_of)
    own = {image: {_norm(t) for t in ts} for image, ts in texts_of.items()}
    out: list[str | None] = []
    for i in range(queries):
        image, found = image_index[i], None
        if len(images) > 1:
            for _ in range(tries):
                other = images[int(rng.integers(len(images)))]
                if other == image:
                    continue
                text = texts_of[other][int(rng.integers(len(texts_of[other])))]
                if _norm(text) not in own[image] and not (linked is not None and linked(text, image)):
                    found = text
                    break
        out.append(found)
    return out


def world_linker(split: Split) -> Callable[[str, int], bool] | None:
    """``linked(text, image)``: whether the world's resolver finds an object of ``image`` that ``text``
    denotes, at the world's location margin or at none (as the generator checks uniqueness). ``None`` when
    the split carries no scene graphs or resolver settings (real data); a text outside the world's grammar
    is never linked (the string rule of ``itm_negatives`` still applies)."""
    scenes, size, lang = split.meta.get("scenes"), split.meta.get("image_size"), split.meta.get("language")
    if scenes is None or size is None or lang is None:
        return None
    margin, near = float(lang["location_margin"]), float(lang["near_distance"])

    def linked(text: str, image: int) -> bool:
        try:
            return any(resolve(text, scenes[image], size, m, near) for m in (margin, 0.0))
        except ParseError:
            return False

    return linked


def world_caption_linker(split: Split) -> Callable[[str, int], bool] | None:
    """``linked(caption, image)``: whether the world says the whole ``caption`` is true of ``image``
    (``world.captions.caption_truth_matrix``); ``None`` without scene graphs and backgrounds (real data)."""
    if any(split.meta.get(k) is None for k in ("scenes", "backgrounds", "image_size", "language")):
        return None
    return lambda text, image: bool(caption_truth_matrix(split, [text], [image])[0, 0])


def grounding_set(
    split: Split, name: str, limit: int | None = None, seed: int = 0, image_size: int | None = None
) -> GroundingSet:
    """Flickr-style records give one query per phrase; referring records one per expression.

    The first ``limit`` queries are kept; their controls (other phrase, ITM negative, see the module
    docstring) are chosen among all queries of the split. ``seed`` and ``name`` seed the negatives. Where a
    record's phrases are parts of its text (Flickr-style), ``captions`` holds the records of the kept
    queries, whole, with negatives drawn among all the split's captions. A real split's images (files) are
    read for the kept queries only, letterboxed to ``image_size``, their boxes and proposals mapped alike.
    """
    real = split.images is None
    image_of = record_images(split)
    if real:
        if image_size is None:
            raise ValueError(f"{name}: a real split (image files) needs image_size, the model's input")
        proposals_of = real_proposals(split)
    else:
        scenes = split.meta.get("scenes")
        if scenes is None:
            raise ValueError(f"{name}: records.json meta has no 'scenes' (the proposals of the ranking metric)")
        proposals_of = {i: [tuple(float(v) for v in o["box"]) for o in objs] for i, objs in enumerate(scenes)}
    index, texts, boxes, proposals, source = [], [], [], [], []
    for k, r in enumerate(split.records):
        for p in r.phrases:
            source.append(k)
            index.append(image_of[k])
            texts.append(r.text[p.start : p.end])
            boxes.append([r.boxes[b] for b in p.box_ids])
            proposals.append(proposals_of[image_of[k]])
    if not texts:
        raise ValueError(f"{name}: no phrase with a box to evaluate")
    n = len(texts) if limit is None else min(limit, len(texts))
    others = [None if j is None else texts[j] for j in other_phrases(index, texts, boxes)[:n]]
    negatives = itm_negatives(index, texts, n, [seed, zlib.crc32(name.encode())], world_linker(split))
    captions = _caption_pairs(split, image_of, name, sorted(set(source[:n])), seed)
    index, boxes, proposals = index[:n], boxes[:n], proposals[:n]
    if not real:
        images = np.asarray(split.images)
    else:  # the kept queries' images only, renumbered 0..; boxes into the letterboxed input's pixels
        first = {image_of[k]: split.records[k] for k in reversed(source[:n])}
        order = sorted(first)
        loaded = [load_image(split.meta, first[i], image_size, name) for i in order]  # type: ignore[arg-type]
        images = np.stack([pixels for pixels, _ in loaded])
        renumber = {i: j for j, i in enumerate(order)}
        boxes_in = {i: lb.to_input for i, (_, lb) in zip(order, loaded, strict=True)}
        boxes = [_tuples(boxes_in[i](b)) for i, b in zip(index, boxes, strict=True)]
        proposals = [_tuples(boxes_in[i](p)) for i, p in zip(index, proposals, strict=True)]
        index = [renumber[i] for i in index]
        if captions is not None:
            captions = MatchPairs([renumber[i] for i in captions.image_index], captions.texts, captions.negatives)
    return GroundingSet(name, images, index, texts[:n], boxes, proposals, others, negatives, captions)


def _tuples(boxes: np.ndarray) -> list[tuple[float, float, float, float]]:
    return [tuple(float(v) for v in b) for b in boxes]  # type: ignore[misc]


def _caption_pairs(split: Split, image_of: list[int], name: str, kept: list[int], seed: int) -> MatchPairs | None:
    """The records ``kept`` as whole image-caption pairs with their negatives; ``None`` when the records'
    phrases span their whole text (referring expressions: the phrase pairs already are the captions).
    ``image_of``: each record's image number."""
    records = split.records
    if all(len(p) == 1 and p[0].start == 0 and p[0].end == len(r.text) for r in records
           if (p := r.phrases)):
        return None
    texts = [r.text for r in records]
    negatives = itm_negatives(image_of, texts, len(records), [seed, zlib.crc32(f"{name}/captions".encode())],
                              world_caption_linker(split))
    return MatchPairs([image_of[k] for k in kept], [texts[k] for k in kept], [negatives[k] for k in kept])


def real_proposals(split: Split) -> dict[int, list[tuple[float, float, float, float]]]:
    """Per image number (``vlrepro.data.images.image_numbers``), the ranking metric's proposals: every
    annotated box of the image, original pixels. A refer split lists its images' COCO objects
    (``meta["objects"]``); otherwise (Flickr30k Entities) the boxes of all the image's records, each once."""
    numbers = image_numbers(split.records)
    objects = split.meta.get("objects")
    out: dict[int, list[tuple[float, float, float, float]]] = {}
    for r in split.records:
        i = numbers[str(r.image)]
        if objects is not None:
            if str(r.image_id) not in objects:  # the target alone would make the ranking metric a free 100 %
                raise DatasetError(f"{_where(split.meta)}: meta['objects'] lists no objects of image {r.image_id}; "
                                   f"re-run the `data` stage (dvc repro data) to convert the split again")
            out[i] = [tuple(map(float, b)) for b in objects[str(r.image_id)]]  # type: ignore[misc]
        else:
            have = out.setdefault(i, [])
            have += [b for b in r.boxes if b not in have]
    return out


def open_split(data_dir: Path, name: str, split: str, source: str = "world") -> Split:
    """Split ``split`` of set ``name`` (its world name) under ``data_dir`` (``data/world`` or ``data/real``).
    A real one must have been converted by the `data` stage and have every image file on disk; otherwise a
    ``DatasetError`` names the folder or the missing files and the ``data.real`` key to set."""
    if source == "world":
        return load_split(world_split_dir(data_dir, name, split))
    if name not in REAL_SETS:
        raise DatasetError(f"amc.source = real: the set {name!r} has no real counterpart; real sets: "
                           f"{', '.join(f'{k} ({v[0]})' for k, v in REAL_SETS.items())}")
    folder, key = REAL_SETS[name]
    return open_real_split(Path(data_dir) / folder / split, f"amc.source = real reads {name} {split}", key)


def _where(meta: dict) -> str:
    return f"{meta.get('dataset', 'a real split')}/{meta.get('split', '')}".rstrip("/")


def world_split_dir(data_dir: Path, name: str, split: str) -> Path:
    folder = Path(data_dir) / name / split
    if not (folder / "records.json").is_file():
        raise FileNotFoundError(f"{folder}/records.json: missing; run the `data` stage (dvc repro data) first")
    return folder
