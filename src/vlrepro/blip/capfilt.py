"""CapFilt: a captioner and a filter fine-tuned from one seed's pre-trained MED bootstrap the web set.

From the no-CapFilt baseline run of the seed (BLIP's sharing, pre-trained on human + raw web pairs):

1. captioner = the model fine-tuned with LM only on the human set; filter = the model fine-tuned with
   ITC + ITM on the human set (*decoupled*); *shared*: one copy fine-tuned with all three losses serves as both;
2. the captioner writes one synthetic caption per web image: nucleus sampling (top-p) and beam search;
3. the filter keeps a web or synthetic text when its ITM match probability reaches ``capfilt.threshold``.

``bootstrap`` returns, per web caption and per web image (synthetic), the texts and keep flags the CapFilt
variants train on
(``vlrepro.blip.data.bootstrap_pairs``), and what only the world can tell: the filter's precision and
recall on the web captions known to be wrong, and how many synthetic captions are true of their image. On
real data nobody knows either, and those measurements are left out.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlrepro.blip.config import BLIPParams
from vlrepro.blip.data import human_pairs, training_images, web_images, web_records
from vlrepro.blip.model import BLIP
from vlrepro.blip.run import build_model, captions, load_clip, match_probability, train
from vlrepro.data.world.captions import caption_truth_matrix

# (name, ITC, ITM, LM weights) of the fine-tuned copies
FINE_TUNES = {"captioner": (0.0, 0.0, 1.0), "filter": (1.0, 1.0, 0.0), "shared": (1.0, 1.0, 1.0)}
# synthetic caption sets: (captioner copy, decoding)
SYNTHETIC = {"decoupled_nucleus": ("captioner", "nucleus"), "decoupled_beam": ("captioner", "beam"),
             "shared_nucleus": ("shared", "nucleus")}  # fmt: skip
FILTER_OF = {"decoupled": "filter", "shared": "shared"}


def filter_scores(keep: list[bool], noisy: list[bool]) -> dict[str, float]:
    """The filter as a detector of wrong captions: precision and recall of *removing* the noisy ones, the
    share kept and the share of noisy captions among those kept. A ratio without a denominator (nothing
    removed, nothing noisy, nothing kept) is left out rather than made up."""
    keep_a, noisy_a = np.asarray(keep, bool), np.asarray(noisy, bool)
    removed = ~keep_a
    tp = float((removed & noisy_a).sum())
    out = {"kept": float(keep_a.mean())}
    if removed.any():
        out["precision"] = tp / removed.sum()
    if noisy_a.any():
        out["recall"] = tp / noisy_a.sum()
    if keep_a.any():
        out["noise_kept"] = float(noisy_a[keep_a].mean())
    return out


def bootstrap(p: BLIPParams, seed: int, data_dir: Path, clip_dir: Path, base_state: dict[str, torch.Tensor]
              ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """``(texts, metrics)`` of CapFilt for one seed (the module docstring); ``base_state`` is the baseline
    run's model state dict."""
    clip, tokenizer = load_clip(clip_dir)
    data = training_images(p, data_dir)
    bank = data.encode(clip.visual)
    base = build_model(p, clip)
    base.load_state_dict(base_state)
    human = human_pairs(data)
    models: dict[str, BLIP] = {}
    for name, weights in FINE_TUNES.items():
        models[name] = copy.deepcopy(base)
        train(models[name], human, data, bank, tokenizer, p, seed, steps=p.capfilt.steps, lr=p.capfilt.lr,
              batch_size=p.capfilt.batch_size, weights=weights)  # fmt: skip
        models[name].eval()
    web, images = web_records(data), web_images(data)  # per web caption; per web image (the world: the same)
    rows, image_rows = [data.n_human + i for i, _ in web], [data.n_human + i for i in images]
    web_bank = bank[image_rows]
    batch = p.eval.batch_size
    synthetic: dict[str, list[str]] = {}
    for key, (owner, method) in SYNTHETIC.items():
        g = torch.Generator().manual_seed(seed)
        synthetic[key] = captions(models[owner], tokenizer, web_bank, p, method, g)
    texts = [r.text for _, r in web]
    world = data.web.images is not None  # only the world knows which texts are wrong
    noisy = [bool(r.meta["noisy"]) for _, r in web] if world else None
    keep_web, keep_synth = {}, {}
    thr = p.capfilt.threshold
    for owner, model in FILTER_OF.items():
        keep_web[owner] = (match_probability(models[model], tokenizer, bank, rows, texts, batch) >= thr).tolist()
    for key in SYNTHETIC:
        model = models[FILTER_OF[key.split("_")[0]]]
        keep_synth[key] = (match_probability(model, tokenizer, bank, image_rows, synthetic[key], batch) >= thr).tolist()
    true_synth = {k: [bool(caption_truth_matrix(data.web, [t], [i])[0, 0]) for t, i in zip(v, images, strict=True)]
                  for k, v in synthetic.items()} if world else None  # fmt: skip
    out = {"web": texts, "noisy": noisy, "keep_web": keep_web, "synthetic": synthetic, "keep_synthetic": keep_synth,
           "synthetic_true": true_synth}  # fmt: skip
    metrics: dict[str, Any] = {
        "filter": {o: filter_scores(keep_web[o], noisy) if noisy is not None else {"kept": float(np.mean(keep_web[o]))}
                   for o in FILTER_OF},
        "synthetic": {},
    }  # fmt: skip
    for key, texts_k in synthetic.items():
        kept = np.asarray(keep_synth[key])
        metrics["synthetic"][key] = {"distinct": len(set(texts_k)) / len(texts_k), "kept": float(kept.mean())}
        if true_synth is not None:
            true = np.asarray(true_synth[key])
            metrics["synthetic"][key] |= {
                "true": float(true.mean()),
                **({"true_among_kept": float(true[kept].mean())} if kept.any() else {}),
                # the filter as a detector of wrong synthetic captions, as for the web texts
                **{f"filter_{k}": v for k, v in filter_scores(kept.tolist(), (~true).tolist()).items()
                   if k in ("precision", "recall")},
            }  # fmt: skip
    return out, metrics
