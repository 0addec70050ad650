"""Encoder outputs of every SMCIM sample, computed once and shared by all variants and seeds.

SMCIM's encoders train at a tenth of the fusion's learning rate in the paper; here (default profile, CPU)
they are frozen, so their outputs can be computed once: the ``smcim_features`` stage writes them and each
``smcim@<variant>-<seed>`` run reads them, which is what makes a matrix of runs fit the CPU budget.
Frozen encoders are the one deliberate departure from the paper's recipe; every run shares it.

Per world set and split, ``<set>/<split>.safetensors`` holds:

- ``level{i}`` (V, N, C_i, h_i, w_i) float16: three CNN stage maps (``LEVEL_RATIOS``) of each image in each of V
  views (train: the original + ``augment.views − 1`` augmented views; evaluation splits: the original);
- ``states`` (U, blocks, L, D) float16 and ``mask`` (U, L): the text encoder's block outputs for each
  distinct text (the flipped views' texts, with left/right swapped, included);
- per expression: ``image`` (M,), ``text`` (M, V) rows of ``states``, ``boxes`` (V, M, 4) normalised
  cxcywh in the view, ``target_px`` (M, 4) the original pixel xyxy box and ``size`` (M, 2) width/height;

plus ``<set>/<split>.json`` with the expression texts (for the figures). Real splits (``smcim.source: real``,
``vlrepro.smcim.real``) also store ``letterbox`` (M, 7), each expression's image placed in the square input
(``vlrepro.data.images.Letterbox.as_row``; ``size`` is then the original width/height), and the JSON the
image files (``image_files``, indexed by ``image``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from vlrepro.data.records import load_split
from vlrepro.io import atomic_path, write_json
from vlrepro.metrics.boxes import xyxy_to_cxcywh
from vlrepro.smcim.augment import apply_view, draw_view, transform_boxes
from vlrepro.smcim.config import SMCIMParams
from vlrepro.transforms import swap_left_right

# The paper resizes the ResNet stages at strides 8, 16 and 32 to a grid of stride 16: one map finer than the
# grid, one as fine, one coarser. The same ratios are kept here for whatever grid stride the profile uses
# (the default profile's 8: the stages at strides 4, 8 and 16). Taking "the last three stages" instead would, on 64-px
# images, leave the one-level ablation a 2x2 map that cannot localise anything.
LEVEL_RATIOS = (0.5, 1, 2)
LEVELS = len(LEVEL_RATIOS)

# The encoders run in float64 and their outputs are rounded to the float16 cache. In float32 a convolution's or
# matmul's sums run in an order that depends on the CPU's instruction set and on the thread count, and about
# 0.3 % of the cached float16 values came out different between two such settings on one machine; in float64
# none did. So the cache, and the dvc.lock hash of every SMCIM run that reads it, is the same whichever CPU
# extracts it: a matrix recorded over several sessions stays up to date (the extraction takes ~4x longer).
ENCODE_DTYPE = torch.float64


def level_stages(reductions: Sequence[int], grid_stride: int) -> list[int]:
    """Indices (finest first) of the CNN stages at ``grid_stride`` × ``LEVEL_RATIOS``, given each stage's stride."""
    want = [round(grid_stride * r) for r in LEVEL_RATIOS]
    if missing := [s for s in want if s not in reductions]:
        raise ValueError(
            f"SMCIM's visual levels need CNN stages at strides {want} (smcim.model.grid_stride = {grid_stride}); "
            f"the CNN's stages have strides {list(reductions)}, none at {missing}: choose a grid stride whose "
            f"half and double are stage strides too"
        )
    return [list(reductions).index(s) for s in want]


def visual_levels(cnn: torch.nn.Module, images: Tensor, grid_stride: int) -> list[Tensor]:
    """The ``LEVELS`` stage maps of ``images`` that SMCIM reads (see ``LEVEL_RATIOS``), finest first."""
    maps = cnn(images)
    return [maps[i] for i in level_stages(cnn.reductions, grid_stride)]  # type: ignore[attr-defined]


@dataclass
class Features:
    """One split's cached encoder outputs (see the module docstring for the fields)."""

    levels: list[Tensor]
    states: Tensor
    mask: Tensor
    image: Tensor
    text: Tensor
    boxes: Tensor
    target_px: Tensor
    size: Tensor
    texts: list[str]
    letterbox: Tensor | None = None  # real images: (M, 7) Letterbox rows; None for the world's square images
    image_files: list[str] | None = None  # real images: the file of each image index

    @property
    def views(self) -> int:
        return self.boxes.shape[0]

    def __len__(self) -> int:
        return len(self.image)


def block_outputs(hidden_states: tuple[Tensor, ...], blocks: int) -> Tensor:
    """BERT ``hidden_states`` (embeddings + n layers) -> (B, blocks, L, D): the output of each block of
    ``≈ n / blocks`` layers (6 layers, 3 blocks: after layers 2, 4 and 6)."""
    n = len(hidden_states) - 1
    if not 1 <= blocks <= n:
        raise ValueError(f"text_blocks = {blocks}: the text encoder has {n} layers")
    ends = [round(n * (i + 1) / blocks) for i in range(blocks)]
    return torch.stack([hidden_states[e] for e in ends], 1)


@torch.no_grad()
def encode_texts(text_encoder: torch.nn.Module, texts: list[str], blocks: int, max_len: int, batch: int = 256):
    """Distinct ``texts`` -> (states (U, blocks, L, D) float16, mask (U, L)).

    Encoded in batches of similar length (a long refcocog expression would otherwise pad a whole batch).
    """
    tok = text_encoder.tokenize(texts, max_len)
    ids, mask = tok["input_ids"], tok["attention_mask"]
    order = torch.argsort(mask.sum(1), stable=True)
    longest = int(mask.sum(1).max())  # stored at the split's longest text, not max_len: most of the cache's bytes
    ids, mask = ids[:, :longest], mask[:, :longest]
    states = None
    for start in range(0, len(texts), batch):
        rows = order[start : start + batch]
        n = int(mask[rows].sum(1).max())
        out = block_outputs(text_encoder.hidden_states(ids[rows, :n], mask[rows, :n]), blocks).half()
        if states is None:
            states = torch.zeros(len(texts), out.shape[1], ids.shape[1], out.shape[-1], dtype=torch.float16)
        states[rows, :, :n] = out
    return states, mask


@torch.no_grad()
def encode_images(cnn: torch.nn.Module, images: Tensor, grid_stride: int, batch: int = 256) -> list[Tensor]:
    """Float images (N, 3, H, W) -> SMCIM's three stage maps (``visual_levels``), float16; the images are cast to
    the CNN's dtype."""
    dtype = next(cnn.parameters()).dtype
    maps = [visual_levels(cnn, images[i : i + batch].to(dtype), grid_stride) for i in range(0, len(images), batch)]
    return [torch.cat([m[k] for m in maps]).half() for k in range(LEVELS)]


def extract_split(
    split_dir: Path, cnn: torch.nn.Module, text_encoder: torch.nn.Module, p: SMCIMParams, views: int, seed: int
) -> Features:
    from vlrepro.models.backbones import images_to_tensor

    split = load_split(split_dir)
    records = split.records
    size = int(split.images.shape[1])
    images = images_to_tensor(np.array(split.images)).to(ENCODE_DTYPE)  # a copy: the split is a read-only memmap
    image = torch.tensor([int(r.image) for r in records])
    target_px = torch.tensor([r.boxes[0] for r in records], dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    level_views, boxes, flips = [[] for _ in range(LEVELS)], [], []
    for v in range(views):
        if v == 0:
            view_images, view_boxes, flip = images, target_px, torch.zeros(len(images), dtype=torch.bool)
        else:
            params = draw_view(len(images), size, p.augment, gen)
            view_images, view_boxes = apply_view(images, params), transform_boxes(target_px, params, image, size)
            flip = params.flip
        for k, m in enumerate(encode_images(cnn, view_images, p.model.grid_stride)):
            level_views[k].append(m)
        boxes.append(xyxy_to_cxcywh(view_boxes / size))
        flips.append(flip[image])
    texts = [r.text for r in records]
    text, states, mask = encode_view_texts(text_encoder, texts, flips, p)
    return Features(
        levels=[torch.stack(lv) for lv in level_views], states=states, mask=mask, image=image, text=text,
        boxes=torch.stack(boxes), target_px=target_px,
        size=torch.tensor([[r.width, r.height] for r in records], dtype=torch.float32), texts=texts,
    )  # fmt: skip


def encode_view_texts(
    text_encoder: torch.nn.Module, texts: list[str], flips: list[Tensor], p: SMCIMParams
) -> tuple[Tensor, Tensor, Tensor]:
    """Each expression's text in each view (left/right swapped where the view is flipped; ``flips[v]`` (M,)),
    encoded once per distinct text: (rows (M, V) into the states, states, mask)."""
    flipped = torch.stack(flips).any(0).tolist()
    variants = sorted(set(texts) | {swap_left_right(t) for t, f in zip(texts, flipped, strict=True) if f})
    row = {t: i for i, t in enumerate(variants)}
    text = torch.tensor([[row[swap_left_right(t) if f[m] else t] for f in flips] for m, t in enumerate(texts)])
    states, mask = encode_texts(text_encoder, variants, p.text_blocks, p.max_len)
    return text, states, mask


def save_features(f: Features, path: Path) -> None:
    tensors = {f"level{k}": m.contiguous() for k, m in enumerate(f.levels)}
    fields = ("states", "mask", "image", "text", "boxes", "target_px", "size")
    tensors |= {k: getattr(f, k).contiguous() for k in fields}
    if f.letterbox is not None:
        tensors["letterbox"] = f.letterbox.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    sidecar = {"texts": f.texts} if f.image_files is None else {"texts": f.texts, "image_files": f.image_files}
    write_json(path.with_suffix(".json"), sidecar)


def load_features(path: Path) -> Features:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no SMCIM features; run the smcim_features stage (dvc repro smcim_features)")
    t = load_file(str(path))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    levels = [t.pop(f"level{k}") for k in range(LEVELS)]
    return Features(levels=levels, texts=sidecar["texts"], image_files=sidecar.get("image_files"), **t)


def load_text_encoder(p: SMCIMParams, pretrain_dir: Path) -> torch.nn.Module:
    from vlrepro.models import load_pretrained
    from vlrepro.models.text import load_minilm

    return load_minilm(p.max_len) if p.text == "minilm" else load_pretrained(Path(pretrain_dir) / "text")


def extract_all(p: SMCIMParams, data_dir: Path, pretrain_dir: Path, out_dir: Path, seed: int) -> dict[str, float]:
    """Write the features of every split SMCIM trains or evaluates on; returns seconds per split.

    ``data_dir``: ``data/world``, or with ``source: real`` ``data/real``, whose splits and images are all checked
    before any is encoded (a missing one stops the stage at once, not after hours). With ``train.encoder_lr > 0``
    (the paper profile) the runs fine-tune the encoders on images and read no features: only ``skipped.json`` is
    written, saying so (a variant that sets ``encoder_lr`` back to 0 then finds no features, and says so).
    """
    from vlrepro.models import load_pretrained

    if p.train.encoder_lr > 0:  # on real data at 512 px the cache would take terabytes for nothing
        write_json(Path(out_dir) / "skipped.json", {"skipped": "smcim.train.encoder_lr > 0: the runs fine-tune the "
                                                    "encoders on images and read no cached features"})
        return {}
    torch.manual_seed(seed)
    cnn = load_pretrained(Path(pretrain_dir) / "cnn").eval().to(ENCODE_DTYPE)
    text_encoder = load_text_encoder(p, pretrain_dir).eval().to(ENCODE_DTYPE)
    jobs = [(s, "train") for s in p.train_sets] + [(s, sp) for s in p.eval_sets for sp in p.eval_splits(s)]
    if p.source == "real":
        from vlrepro.smcim.real import extract_real_split, real_split

        real = {job: real_split(Path(data_dir) / job[0] / job[1]) for job in dict.fromkeys(jobs)}
    seconds = {}
    for i, (name, split) in enumerate(tqdm(jobs, desc="smcim features")):
        t0 = time.perf_counter()
        views = p.augment.views if split == "train" else 1
        if p.source == "world":
            f = extract_split(Path(data_dir) / name / split, cnn, text_encoder, p, views, seed + i)
        else:
            f = extract_real_split(real[name, split], Path(data_dir) / name / split, cnn, text_encoder, p, views,
                                   seed + i)  # fmt: skip
        save_features(f, Path(out_dir) / name / f"{split}.safetensors")
        seconds[f"{name}/{split}"] = time.perf_counter() - t0
    return seconds
