"""One BLIP pre-training run (variant x seed) and its evaluation on ``captions`` (world, or COCO Karpathy).

A run builds the MED from the world CLIP (``build_model``), pre-trains it with ITC + ITM + LM on the
variant's pairs (``vlrepro.blip.data``) and scores it on ``captions/test``:

- retrieval: ITC similarities of all 200 images x 1,000 captions; each query's top ``eval.k`` re-ranked by
  ITM match logit + ITC similarity (the card); R@1/5/10 text retrieval (image -> text, a hit when any of the
  image's captions is within K) and image retrieval (text -> image); chance for R@1: 5/1000 and 1/200;
- ITM accuracy, 1:1 against random negatives: a caption of another image that the world says is false of
  this one (chance 0.5; on real data: that is not one of this image's own captions, the only truth COCO has);
- captioning: beam search (``eval.beams``, ``min_len``/``max_len``), BLEU-4 and CIDEr against the five
  references; control: the most frequent caption of the human set, written for every image.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlrepro.blip.config import BLIPParams
from vlrepro.blip.data import (
    ImageBank,
    PairBatches,
    Pairs,
    TrainingImages,
    bootstrap_pairs,
    check_bank_fits,
    encode_split,
    image_count,
    open_split,
    training_images,
)  # fmt: skip
from vlrepro.blip.generate import beam_search, nucleus
from vlrepro.blip.model import BLIP, MEDConfig, blip_losses, count_parameters
from vlrepro.data.images import record_images
from vlrepro.data.records import Split
from vlrepro.data.world.captions import caption_truth_matrix
from vlrepro.metrics.captioning import caption_scores
from vlrepro.models.text import encode, special_ids
from vlrepro.train import TrainConfig, fit, run_dir

# --- the model -----------------------------------------------------------------------------------------------


def build_model(p: BLIPParams, clip: torch.nn.Module) -> BLIP:
    """MED from the world CLIP: embeddings, SA and FFN from its text BERT (encoder and decoder alike), ITC
    projections and temperature; cross-attention, ITM head and [ENC]/[DEC] new."""
    m = p.model
    cfg = MEDConfig(text=clip.config.text, image_dim=clip.visual.embed_dim, embed_dim=clip.config.embed_dim,
                    sharing=m.sharing, queue_size=m.queue_size, momentum=m.momentum, alpha=m.alpha,
                    label_smoothing=m.label_smoothing)  # fmt: skip
    model = BLIP(cfg)
    model.med.load_bert(clip.text.bert.state_dict())
    model.image_proj.load_state_dict(clip.image_proj.state_dict())
    model.text_proj.load_state_dict(clip.text_proj.state_dict())
    model.logit_scale.load_state_dict(clip.logit_scale.state_dict())
    model.sync_momentum()
    return model


def param_groups(model: BLIP, lr: float, encoder_lr: float) -> list[dict[str, Any]]:
    """New parts (cross-attention, ITM head, the LM head's transform and bias, image-token input) at ``lr``,
    CLIP's parts at ``encoder_lr`` (the word embeddings too, with the [ENC]/[DEC] rows and the tied LM output)."""
    new, old = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            fresh = ".crossattention." in name or name.startswith(("itm_head.", "med.image_in.", "med.lm_head."))
            (new if fresh else old).append(p)
    return [{"params": new, "lr": lr, "name": "new"}, {"params": old, "lr": encoder_lr, "name": "clip"}]


def train(model: BLIP, pairs: Pairs, images: TrainingImages, bank: ImageBank, tokenizer: Any, p: BLIPParams,
          seed: int, *, steps: int | None = None, lr: float | None = None, batch_size: int | None = None,
          weights: tuple[float, float, float] = (1, 1, 1), evaluate: Callable | None = None) -> list[dict]:  # fmt: skip
    """Train ``model`` in place on ``pairs`` (``weights`` of ITC, ITM, LM); returns the history. ``steps``,
    ``lr`` (both parameter groups) and ``batch_size`` default to ``train``'s recipe (CapFilt's fine-tuning sets
    them)."""
    t, m = p.train, p.model
    steps = steps or t.steps
    truth = images.truth if t.world_negatives else None
    data = PairBatches(pairs, bank, lambda texts, n: encode(tokenizer, texts, n), model.config.text.max_len, truth)
    calls = [0]

    def loss(net: torch.nn.Module, batch: dict) -> dict:
        bare = net.module if hasattr(net, "module") else net
        ramp = min(1.0, calls[0] / m.alpha_ramp_steps) if m.alpha_ramp_steps else 1.0
        calls[0] += 1
        return blip_losses(bare, batch, m.alpha * ramp, t.itm_negatives == "hard", weights, t.balanced_itm)

    groups = param_groups(model, lr or t.lr, lr or t.encoder_lr)
    cfg = TrainConfig(
        steps=steps, batch_size=batch_size or t.batch_size, lr=lr or t.lr, weight_decay=t.weight_decay,
        schedule="cosine", warmup_steps=min(t.warmup_steps, steps - 1), seed=seed, ckpt_every=0,
        log_every=max(10, steps // 50), eval_every=t.eval_every if evaluate else 0, progress=False,
        cpu_precision=t.precision,
    )  # fmt: skip
    with run_dir(f"blip-{seed}") as tmp:
        result = fit(model, data, loss, cfg, tmp, collate_fn=data.collate, evaluate=evaluate, param_groups=groups,
                     run_id="blip")  # fmt: skip
    return result.history


# --- evaluation ----------------------------------------------------------------------------------------------


@dataclass
class CaptionSet:
    """An evaluation split: its images' tokens, every caption and the image it belongs to."""

    split: Split
    bank: ImageBank
    texts: list[str]
    text_image: list[int]

    @classmethod
    def load(cls, data_dir: Path, split: str, visual: torch.nn.Module, source: str = "world") -> CaptionSet:
        s = open_split(data_dir, "captions", split, source)
        check_bank_fits(visual, image_count(s), f"captions/{split} is evaluated whole; run on a machine with "
                        "more memory")  # fmt: skip
        return cls(s, encode_split(visual, s), [r.text for r in s.records], record_images(s))

    def true_of(self, text: str, image: int) -> bool:
        """Whether ``text`` describes ``image``: the world's judgement, or on real data whether it is one of
        the image's own captions."""
        if self.split.images is not None:
            return bool(caption_truth_matrix(self.split, [text], [image])[0, 0])
        return _norm(text) in self._own_captions.get(image, set())

    @cached_property
    def _own_captions(self) -> dict[int, set[str]]:
        own: dict[int, set[str]] = {}
        for t, i in zip(self.texts, self.text_image, strict=True):
            own.setdefault(i, set()).add(_norm(t))
        return own

    def references(self) -> dict[str, list[str]]:
        refs: dict[str, list[str]] = {}
        for text, image in zip(self.texts, self.text_image, strict=True):
            refs.setdefault(str(image), []).append(text)
        return refs


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@torch.no_grad()
def text_features(model: BLIP, tokenizer: Any, texts: list[str], batch: int) -> torch.Tensor:
    out = []
    for s in range(0, len(texts), batch):
        enc = encode(tokenizer, texts[s : s + batch], model.config.text.max_len)
        out.append(model.text_feature(enc["input_ids"], enc["attention_mask"]))
    return torch.cat(out)


@torch.no_grad()
def match_probability(model: BLIP, tokenizer: Any, bank: ImageBank, image: list[int], texts: list[str],
                      batch: int) -> torch.Tensor:  # fmt: skip
    """``(N,)`` ITM match probability (softmax) of the pairs ``(bank[image[i]], texts[i])``."""
    return torch.softmax(itm_logits(model, tokenizer, bank, image, texts, batch), -1)[:, 1]


@torch.no_grad()
def itm_logits(model: BLIP, tokenizer: Any, bank: ImageBank, image: list[int], texts: list[str],
               batch: int) -> torch.Tensor:  # fmt: skip
    out = [torch.zeros(0, 2)]
    for s in range(0, len(texts), batch):
        enc = encode(tokenizer, texts[s : s + batch], model.config.text.max_len)
        out.append(model.itm_logits(enc["input_ids"], enc["attention_mask"], bank.tokens[image[s : s + batch]]).float())
    return torch.cat(out)


def _recall(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(np.mean(ranks < k)) for k in (1, 5, 10)}


@torch.no_grad()
def retrieval(model: BLIP, tokenizer: Any, data: CaptionSet, k: int, batch: int) -> dict[str, float]:
    """``tr1/5/10`` (image -> text), ``ir1/5/10`` (text -> image) after ITM re-ranking of ITC's top ``k``, and
    ``itc_tr1`` / ``itc_ir1`` before it. Candidates outside the top ``k`` keep their ITC order below it."""
    image_feat = model.image_feature(data.bank.pooled)
    sim = image_feat @ text_features(model, tokenizer, data.texts, batch).t()  # (I, T)
    text_image = torch.tensor(data.text_image)
    gt = text_image[None, :] == torch.arange(len(sim))[:, None]  # (I, T)

    def ranks(scores: torch.Tensor, truth: torch.Tensor) -> np.ndarray:  # rank of the first true column per row
        order = scores.argsort(1, descending=True)
        return truth.gather(1, order).float().argmax(1).numpy()

    k_t, k_i = min(k, sim.shape[1]), min(k, sim.shape[0])
    top_t = sim.topk(k_t, 1).indices  # per image: k texts
    image_rows = torch.arange(len(sim)).repeat_interleave(k_t)
    s = itm_logits(model, tokenizer, data.bank, image_rows.tolist(), [data.texts[j] for j in top_t.flatten()], batch)
    # below every re-ranked candidate, the rest in ITC order (so R@K stays defined for K > k)
    i2t = sim - sim.abs().max() * 3 - s[:, 1].abs().max()
    i2t.scatter_(1, top_t, s[:, 1].view(-1, k_t) + sim.gather(1, top_t))
    top_i = sim.t().topk(k_i, 1).indices  # per text: k images
    texts = [t for t in data.texts for _ in range(k_i)]
    s = itm_logits(model, tokenizer, data.bank, top_i.flatten().tolist(), texts, batch)
    t2i = sim.t() - sim.abs().max() * 3 - s[:, 1].abs().max()
    t2i.scatter_(1, top_i, s[:, 1].view(-1, k_i) + sim.t().gather(1, top_i))
    return (_recall(ranks(i2t, gt), "tr") | _recall(ranks(t2i, gt.t()), "ir")
            | {"itc_tr1": float(np.mean(ranks(sim, gt) < 1)), "itc_ir1": float(np.mean(ranks(sim.t(), gt.t()) < 1))})


def itm_negatives(data: CaptionSet, n: int, seed: int = 0, tries: int = 50) -> tuple[list[int], list[str], list[str]]:
    """The first ``n`` caption pairs and, per pair, a caption of a random other image that is not true of the
    pair's image (``CaptionSet.true_of``; pairs without one after ``tries`` draws are left out). Seeded by the
    split only, so every run is scored on the same pairs."""
    rng = np.random.default_rng([seed, zlib.crc32(b"blip-itm")])
    images, texts, negatives = [], [], []
    for text, image in list(zip(data.texts, data.text_image, strict=True))[:n]:
        for _ in range(tries):
            j = int(rng.integers(len(data.texts)))
            if data.text_image[j] != image and not data.true_of(data.texts[j], image):
                images.append(image)
                texts.append(text)
                negatives.append(data.texts[j])
                break
    return images, texts, negatives


def itm_accuracy(model: BLIP, tokenizer: Any, data: CaptionSet, pairs: tuple, batch: int) -> float:
    """1:1 accuracy of "match iff p(match) > 0.5" over the pairs and their negatives (chance 0.5)."""
    images, texts, negatives = pairs
    p = match_probability(model, tokenizer, data.bank, images + images, texts + negatives, batch)
    n = len(texts)
    return float(((p[:n] > 0.5).sum() + (p[n:] <= 0.5).sum()) / (2 * n))


def decode_texts(tokenizer: Any, rows: list[list[int]]) -> list[str]:
    """Decoded captions of token rows without special tokens (the decoders never emit one)."""
    return [tokenizer.decode(r) for r in rows]


@torch.no_grad()
def captions(model: BLIP, tokenizer: Any, bank: ImageBank, p: BLIPParams, method: str = "beam",
             generator: torch.Generator | None = None, batch: int = 50) -> list[str]:  # fmt: skip
    """One caption per image of ``bank`` (beam search or nucleus sampling, the card's lengths)."""
    e, ids = p.eval, special_ids(tokenizer)
    out: list[str] = []
    for s in range(0, len(bank), batch):
        tokens = bank.tokens[s : s + batch]
        if method == "beam":
            rows = beam_search(model, tokens, ids, e.beams, e.min_len, e.max_len)
        else:
            rows = nucleus(model, tokens, ids, p.capfilt.top_p, e.min_len, e.max_len, generator)
        out += decode_texts(tokenizer, rows)
    return out


def most_frequent(texts: list[str]) -> str:
    """The most frequent text (ties: the alphabetically first)."""
    counts = Counter(texts)
    return min(counts, key=lambda t: (-counts[t], t))


def evaluate(model: BLIP, tokenizer: Any, test: CaptionSet, p: BLIPParams, frequent: str) -> tuple[dict, list[str]]:
    """Every test score of one model (the module docstring) and its beam captions of the test images."""
    model.eval()
    e = p.eval
    scores = retrieval(model, tokenizer, test, e.k, e.batch_size)
    scores["itm_acc"] = itm_accuracy(model, tokenizer, test, itm_negatives(test, len(test.texts)), e.batch_size)
    scores["itm_chance"] = 0.5
    scores["tr1_chance"] = float(np.mean([test.text_image.count(i) for i in set(test.text_image)]) / len(test.texts))
    scores["ir1_chance"] = 1 / len(test.bank)
    generated = captions(model, tokenizer, test.bank, p)
    refs = test.references()
    keys = sorted(refs, key=int)
    scores |= caption_scores(refs, dict(zip(keys, generated, strict=True)))
    control = caption_scores(refs, dict.fromkeys(keys, frequent))
    scores |= {"bleu4_frequent": control["bleu4"], "cider_frequent": control["cider"]}
    return scores, generated


def curve_evaluator(model: BLIP, tokenizer: Any, val: CaptionSet, p: BLIPParams) -> Callable:
    """The learning curve's point: ITM accuracy on the first ``eval.curve_pairs`` val pairs, ITC R@1."""
    pairs = itm_negatives(val, p.eval.curve_pairs)

    def point(net: torch.nn.Module) -> dict[str, float]:
        bare = net.module if hasattr(net, "module") else net
        sim = bare.image_feature(val.bank.pooled) @ text_features(bare, tokenizer, val.texts, p.eval.batch_size).t()
        hit = sim.t().argmax(1) == torch.tensor(val.text_image)
        return {"val_itm_acc": itm_accuracy(bare, tokenizer, val, pairs, p.eval.batch_size),
                "val_itc_ir1": float(hit.float().mean())}  # fmt: skip

    return point


# --- one run ----------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    metrics: dict[str, Any]
    history: list[dict]
    examples: dict[str, Any]
    model: BLIP
    seconds: float


def load_clip(clip_dir: Path) -> tuple[torch.nn.Module, Any]:
    from vlrepro.models import load_pretrained

    clip = load_pretrained(Path(clip_dir))
    clip.eval()
    return clip, clip.text.tokenizer


def train_and_evaluate(p: BLIPParams, seed: int, data_dir: Path, clip_dir: Path, capfilt: dict | None = None
                       ) -> RunResult:  # fmt: skip
    """Pre-train the MED of ``p`` (a variant's section) on its pairs with ``seed`` and score it."""
    start = time.time()
    clip, tokenizer = load_clip(clip_dir)
    data: TrainingImages = training_images(p, data_dir)
    test, val = (CaptionSet.load(data_dir, s, clip.visual, p.source) for s in ("test", "val"))  # files checked first
    bank = data.encode(clip.visual)
    pairs = bootstrap_pairs(p, data, capfilt)
    torch.manual_seed(seed)
    model = build_model(p, clip)
    history = train(model, pairs, data, bank, tokenizer, p, seed, evaluate=curve_evaluator(model, tokenizer, val, p))
    frequent = most_frequent([t for t, s in zip(pairs.texts, pairs.source, strict=True) if s == "human"])
    scores, generated = evaluate(model, tokenizer, test, p, frequent)
    n = min(p.examples, len(test.bank))
    g = torch.Generator().manual_seed(seed)
    sampled = captions(model, tokenizer, test.bank[:n], p, "nucleus", g)
    refs = test.references()
    examples = {"images": list(range(n)), "beam": generated[:n], "nucleus": sampled,
                "references": [refs[str(i)] for i in range(n)], "frequent_caption": frequent}  # fmt: skip
    if test.split.images is None:  # real data: the notebook reads the example images from their files
        files = {i: str(r.image) for i, r in zip(test.text_image, test.split.records, strict=True)}
        examples |= {"image_root": test.split.meta.get("image_root"), "files": [files[i] for i in range(n)]}
    sources = Counter(pairs.source)
    metrics = {"captions": {"test": scores},
               "params": {"med": count_parameters(model.med), "med_and_heads": count_parameters(model) -
                          count_parameters(model.momentum)},
               "train": {"pairs": len(pairs), **{f"pairs_{k}": v for k, v in sources.items()},
                         **{k: v for k, v in history[-1].items() if k in ("itc", "itm", "lm", "loss")}}}  # fmt: skip
    return RunResult(metrics, history, examples, model, time.time() - start)

