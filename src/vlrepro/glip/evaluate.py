"""GLIP's evaluations: detection with a class-list prompt (COCO AP, base and novel classes apart) and phrase
grounding (R@k).

Detection: the prompt lists every class of the split; a cell's class score is the mean sigmoid over the
class's tokens, ranked by ``sqrt(class score × centerness)`` as GLIP does; per-class NMS, then the best
``max_detections`` per image. Grounding: the caption is the prompt, a phrase's score per cell is the mean
over the phrase's tokens; a phrase is found at k when one of the k best boxes after NMS overlaps the union
of its ground-truth boxes at IoU ≥ 0.5 (Flickr30k Entities' merged-box protocol).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torchvision.ops import batched_nms, box_iou, nms

from vlrepro.data.records import Record, Split
from vlrepro.glip.config import EvalParams
from vlrepro.glip.data import base_ids, category_names, coco_ground_truth, novel_ids, split_pixels
from vlrepro.glip.model import GLIP, GLIPOutput
from vlrepro.glip.prompts import Prompt, class_scores, join_classes, positive_map, span_map
from vlrepro.metrics.coco import coco_box_ap
from vlrepro.models.backbones import images_to_tensor
from vlrepro.models.text import encode
from vlrepro.train import evaluating


def _scores(out: GLIPOutput, maps: Tensor) -> Tensor:
    """``(B, N, C)`` ranking scores of the cells for the ``maps`` (C, L) entries of each prompt."""
    probs = out.logits.sigmoid()  # padding logits are -inf: probability 0
    return (class_scores(probs, maps) * out.centerness.sigmoid()[..., None]).sqrt()


def phrase_scores(out: GLIPOutput, i: int, maps: Tensor) -> Tensor:
    """``(N, P)``: image ``i``'s cell scores for the ``maps`` (P, L) of its own text's phrases."""
    return _scores(GLIPOutput(out.logits[i : i + 1], out.boxes[i : i + 1], out.centerness[i : i + 1]), maps)[0]


@torch.no_grad()
def detect(
    model: GLIP, images: np.ndarray, prompt: Prompt, tokenizer: Tokenizer, p: EvalParams, max_len: int,
    image_ids: Sequence[int], batch: int = 64,
) -> list[dict[str, Any]]:  # fmt: skip
    """COCO result dicts of ``images`` (uint8, N×H×W×3) for the classes of ``prompt``."""
    enc = encode(tokenizer, [prompt.text], max_len)
    maps = positive_map(tokenizer, prompt, enc["input_ids"].shape[1])
    results = []
    with evaluating(model):
        for start in range(0, len(images), batch):
            x = images_to_tensor(images[start : start + batch])
            n = len(x)
            out = model(x, enc["input_ids"].expand(n, -1), enc["attention_mask"].expand(n, -1))
            scores = _scores(out, maps)
            boxes = (out.boxes * model.grid_stride).clamp(min=0)
            boxes[..., 0::2] = boxes[..., 0::2].clamp(max=x.shape[-1])
            boxes[..., 1::2] = boxes[..., 1::2].clamp(max=x.shape[-2])
            for i in range(n):
                s, cells, cls = _candidates(scores[i], p.score_threshold)
                b = boxes[i, cells]
                keep = batched_nms(b, s, cls, p.nms_iou)[: p.max_detections]
                for k in keep.tolist():
                    x1, y1, x2, y2 = b[k].tolist()
                    results.append({"image_id": int(image_ids[start + i]), "category_id": prompt.classes[int(cls[k])],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s[k])})  # fmt: skip
    return results


def _candidates(scores: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """(score, cell, class) of every (cell, class) pair above ``threshold``."""
    cells, cls = (scores > threshold).nonzero(as_tuple=True)
    return scores[cells, cls], cells, cls


def detection_ap(
    model: GLIP, split: Split, tokenizer: Tokenizer, p: EvalParams, max_len: int, images: Sequence[int] | None = None,
    names: Sequence[str] | None = None, groups: dict[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """COCO AP of ``split`` with the prompt of all its classes: ``{"all"|"base"|"novel": {AP, AP50, ...}}``.

    ``names``: the words the prompt uses for the classes, in category-id order (default: the class names;
    the shuffled-names control and prompt engineering pass others). ``images``: a subset of image indices.
    ``groups``: more class groups to score apart, by name (e.g. the classes that prompt engineering renames).
    """
    names = list(names) if names is not None else category_names(split)
    ids = sorted({int(r.image) for r in split.records}) if images is None else list(images)
    prompt = join_classes(names, range(len(names)))
    dets = []
    for start in range(0, len(ids), p.batch_size):  # a real split is read from its files a chunk at a time
        chunk = ids[start : start + p.batch_size]
        dets += detect(model, split_pixels(split, chunk), prompt, tokenizer, p, max_len, chunk, batch=p.batch_size)
    groups = {"all": range(len(names)), "base": base_ids(split), "novel": novel_ids(split), **(groups or {})}
    out = {}
    with tempfile.TemporaryDirectory(prefix="glip_ap_") as tmp:
        for group, cats in groups.items():
            if not len(cats):  # e.g. no novel class in a real ODinW set: nothing to score
                continue
            path = Path(tmp) / f"{group}.json"
            path.write_text(json.dumps(coco_ground_truth(split, cats, ids)))
            wanted = set(cats)
            out[group] = coco_box_ap(path, [d for d in dets if d["category_id"] in wanted])
    return out


def phrase_boxes(
    model: GLIP, split: Split, records: Sequence[Record], spans: Callable[[Record], list[tuple[int, int]]],
    tokenizer: Tokenizer, max_len: int, batch: int = 64,
) -> Iterator[tuple[Record, Tensor, Tensor]]:  # fmt: skip
    """Per record, prompted with its own text: ``(record, boxes (N, 4) in pixels, scores (N, P))`` of every
    cell for each of the record's ``spans(record)`` (the phrases to ground)."""
    with evaluating(model), torch.no_grad():
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            enc = encode(tokenizer, [r.text for r in chunk], max_len)
            x = images_to_tensor(split_pixels(split, [int(r.image) for r in chunk]))
            out = model(x, enc["input_ids"], enc["attention_mask"])
            boxes = (out.boxes * model.grid_stride).clamp(0, x.shape[-1])
            for i, r in enumerate(chunk):
                maps = span_map(tokenizer, r.text, [[s] for s in spans(r)], enc["input_ids"].shape[1])
                yield r, boxes[i], phrase_scores(out, i, maps)


def grounding_recall(
    model: GLIP, split: Split, tokenizer: Tokenizer, max_len: int, ks: Sequence[int] = (1, 5, 10),
    nms_iou: float = 0.5, batch: int = 64,
) -> dict[str, float]:  # fmt: skip
    """``{"R@1", "R@5", "R@10"}`` over every phrase of ``split``'s captions (``batch`` images a forward pass)."""
    records = [r for r in split.records if r.phrases]
    hits = {k: [] for k in ks}
    for r, boxes, scores in phrase_boxes(model, split, records, _phrase_spans, tokenizer, max_len, batch):
        for j, ph in enumerate(r.phrases):
            gt = torch.tensor([r.boxes[b] for b in ph.box_ids], dtype=torch.float32)
            merged = torch.cat([gt[:, :2].min(0).values, gt[:, 2:].max(0).values])[None]
            order = nms(boxes, scores[:, j], nms_iou)
            ious = box_iou(boxes[order[: max(ks)]], merged)[:, 0]
            for k in ks:
                hits[k].append(bool((ious[:k] >= 0.5).any()))
    return {f"R@{k}": float(np.mean(v)) if v else 0.0 for k, v in hits.items()}


def _phrase_spans(record: Record) -> list[tuple[int, int]]:
    return [(ph.start, ph.end) for ph in record.phrases]
