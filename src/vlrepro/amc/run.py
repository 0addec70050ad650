"""One AMC run (variant × seed): from the ``amc_pretrain`` checkpoint (``vlrepro.amc.pretrain``), train the
ALBEF-style model with ITC + ITM + MLM (+ AMC) on region descriptions, then the pointing game.

Training loss per batch of B pairs (``albef_amc_loss``, also the pre-training phase's loss, without AMC):

- **ITC**: projections of the image [CLS] and of the text feature (``amc.text_pooling``: the mean of the text
  tokens by default, ALBEF's [CLS] in the ``paper`` profile), InfoNCE with soft targets
  ``α·softmax(momentum sims) + (1-α)·positives`` (texts of the same image are positives), ALBEF's momentum
  distillation without the queue;
- **ITM**: the fusion encoder on B positive pairs and 2B negatives (per text an image, per image a text, from
  other images of the batch; ``amc.itm_negatives``: uniformly by default, ALBEF's hard negatives drawn ∝
  softmax of the contrastive similarity in the ``paper`` profile), 2-way cross-entropy;
- **MLM**: BERT masking of the text, fused with its image, tied-decoder cross-entropy;
- **AMC** (variants with λ1 or λ2 > 0): GradCAM of the summed match logits of the positive pairs that keep a
  box, at the variant's fusion layer, with ``create_graph=True``; ReLU, min-max normalised, upsampled to the
  mask size; ``λ1·L_mean + λ2·L_max``. Its gradient reaches every parameter before that layer (second order).

Evaluation per split (``evaluate_grounding``): the pointing game and proposal ranking of the GradCAM of the
match logit, and beside them two controls that need no grounding, for the learning gates (``gate_rows``):

- ``pointing_centre``: a constant point at the image centre, same hit rule;
- ``pointing_other_phrase``: the same model's heatmap for another phrase of the same image (a different
  object, see ``amc.data``) scored against the query's boxes; a model that ignores the phrase scores as on
  the query itself. Over the ``n_other_phrase`` queries that have one; ``pointing_paired`` is the
  pointing game on those same queries;
- on the ``ITM_SETS`` splits (``evaluate_itm``), image-text matching accuracy, 1:1 against negatives (a
  text of another image that is not true of this one), chance 0.5: ``caption_itm_acc`` on the images' whole
  captions (ALBEF's own task, the gate) and ``itm_acc`` on the single phrases (harder: a phrase names one
  object, and its negative often differs from an object of the image in one attribute).

Outputs: ``reports/metrics/amc/<variant>-<seed>.json`` (metrics + claim and gate rows) and
``runs/amc/<variant>-<seed>/`` (``history.json``: the training log and, every ``amc.eval.curve_every`` steps
from step 0, a learning-curve point ``curve_point``; ``heatmaps.npz`` of fixed samples and of their other
phrases; ``timing.json``;
``hits.json``: per split the 0/1 hits per query in order, ``pointing``, ``centre`` and ``other_phrase``
(``null`` where a query has no other phrase), so that variants can later be compared query by query).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlrepro.amc.config import CLAIM_METRICS, EVAL_SPLITS, PAPER, AMCParams
from vlrepro.amc.data import GroundingSet, MatchPairs, RegionPairs, grounding_set, open_split
from vlrepro.amc.model import ALBEF
from vlrepro.amc.train import train_albef
from vlrepro.data.real.overlap import without_images_of
from vlrepro.explain.gradcam import AttentionRecorder, attention_gradcam, upsample
from vlrepro.io import write_json, write_metrics
from vlrepro.metrics.pointing import centre_hits, pointing_hits, proposal_hit
from vlrepro.models import load_pretrained
from vlrepro.models.backbones import images_to_tensor
from vlrepro.train import evaluating

# Learning gates (vlrepro.report.gates), the same for every variant: a claim between two variants is testable
# only if both beat controls that need no learning, computed in the same run on the same queries (below).
# Each: metric, the control in words, its metric (or constant ``control_value``), rule and margin.
GATES: tuple[dict[str, str | float], ...] = (
    # on the same queries: those whose image has another phrase
    {"metric": "flickr.test.pointing_paired", "control": "same model, another phrase of the image",
     "control_metric": "flickr.test.pointing_other_phrase", "rule": "plus", "margin": 0.10},
    {"metric": "flickr.test.pointing", "control": "centre point",
     "control_metric": "flickr.test.pointing_centre", "rule": "plus", "margin": 0.20},
    # ALBEF's matching task: image-caption pairs (the phrase pairs' itm_acc is reported beside it, ungated)
    {"metric": "flickr.val.caption_itm_acc", "control": "chance (1:1 random negatives)", "control_value": 0.5,
     "rule": "min", "margin": 0.80},
)  # fmt: skip
ITM_SETS: tuple[str, ...] = ("flickr",)  # evaluation sets whose splits also get ITM accuracy (itm_acc)


def claim_rows(variants: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """The card's claims (1) and (2) as ledger rows, for the variants this params file defines.

    Claim (3), larger gains with fewer boxes, compares differences of differences; the notebook decides it.
    """
    rows = []
    for metric in CLAIM_METRICS:
        rows.append({"paper": PAPER, "claim": "AMC beats the same model trained without it (pointing game)",
                     "metric": metric, "variant": "amc", "reference_variant": "baseline", "higher_is_better": True})
        for single in ("mean_only", "max_only"):
            if single in variants:
                rows.append({"paper": PAPER, "claim": "both margins help: L_mean + L_max beats either alone",
                             "metric": metric, "variant": "amc", "reference_variant": single,
                             "higher_is_better": True})
    return rows


def gate_rows(
    variants: Sequence[str], sets: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """The learning gates (``GATES``) of each of ``variants`` as rows for ``write_metrics(gates=...)``.

    A run passes its own variant only: a row for a variant without runs (one defined in params but not in
    the dvc matrix) would name metrics the report cannot find. Gates on splits outside ``sets`` (the
    evaluated ``eval.sets``; default all) are left out for the same reason.
    """
    evaluated = {f"{name}.{split}" for name, splits in (EVAL_SPLITS if sets is None else sets).items()
                 for split in splits}
    return [{"paper": PAPER, "variant": v, **gate} for v in variants for gate in GATES
            if str(gate["metric"]).rsplit(".", 1)[0] in evaluated]


# --- evaluation -----------------------------------------------------------------------------------------


@torch.no_grad()
def _image_tokens(model: ALBEF, images: np.ndarray, index: list[int], batch: int) -> dict[int, Tensor]:
    device = next(model.parameters()).device
    unique = sorted(set(index))
    out: dict[int, Tensor] = {}
    for start in range(0, len(unique), batch):
        chunk = unique[start : start + batch]
        tokens = model.encode_image(images_to_tensor(images[chunk]).to(device))
        out.update(zip(chunk, tokens, strict=True))
    return out


def grounding_heatmaps(model: ALBEF, data: GroundingSet, layer: int, batch: int = 256) -> Tensor:
    """``(N, H, W)`` GradCAM heatmaps (image resolution) of every query of ``data`` at fusion ``layer``."""
    device = next(model.parameters()).device
    size = tuple(data.images.shape[1:3])
    heats = [torch.zeros(0, *size)]
    with evaluating(model):
        tokens = _image_tokens(model, data.images, data.image_index, batch)  # in eval mode too (dropout)
        for start in range(0, len(data), batch):
            sl = slice(start, start + batch)
            enc = model.text.tokenize(data.texts[sl])
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            image_tokens = torch.stack([tokens[i] for i in data.image_index[sl]])
            with torch.no_grad():
                text_hidden = model.encode_text(ids, mask)
            with AttentionRecorder(model.attention_module(layer)) as rec:
                logits = model.itm_logits(image_tokens, text_hidden, mask)
                heat = attention_gradcam(logits[:, 1].sum(), rec.last, mask, model.grid,
                                         model.visual.num_prefix_tokens)
            heats.append(upsample(heat.detach(), size).cpu())  # type: ignore[arg-type]
    return torch.cat(heats)


def evaluate_grounding(
    model: ALBEF, data: GroundingSet, layer: int, batch: int = 256
) -> tuple[dict[str, float], Tensor, dict[str, list[int | None]]]:
    """Scores, heatmaps and per-query hits of one evaluation split (see the module docstring).

    Scores: ``pointing``, ``proposal_acc``, ``n``, ``pointing_centre``, and where some query has another
    phrase ``pointing_other_phrase``, ``pointing_paired``, ``n_other_phrase``. Hits: 0/1 lists in query
    order, ``pointing``, ``centre``, ``other_phrase`` (``None`` where a query has no other phrase).
    """
    heat = grounding_heatmaps(model, data, layer, batch)
    hits = pointing_hits(heat, data.boxes)
    centre = centre_hits(data.images.shape[1], data.images.shape[2], data.boxes)
    ranked = [proposal_hit(h, p, t) for h, p, t in zip(heat, data.proposals, data.boxes, strict=True)]
    scores: dict[str, float] = {"pointing": sum(hits) / len(hits), "proposal_acc": sum(ranked) / len(ranked),
                                "n": len(hits), "pointing_centre": sum(centre) / len(centre)}
    pairs = [(i, t) for i, t in enumerate(data.other_texts or []) if t is not None]
    other: list[int | None] = [None] * len(data)
    if pairs:
        paired = [i for i, _ in pairs]
        control = data.subset(paired, [t for _, t in pairs])  # other phrases, the queries' boxes
        control_hits = pointing_hits(grounding_heatmaps(model, control, layer, batch), control.boxes)
        for i, hit in zip(paired, control_hits, strict=True):
            other[i] = int(hit)
        scores |= {"pointing_other_phrase": sum(control_hits) / len(paired),
                   "pointing_paired": sum(hits[i] for i in paired) / len(paired), "n_other_phrase": len(paired)}
    per_query = {"pointing": [int(h) for h in hits], "centre": [int(h) for h in centre], "other_phrase": other}
    return scores, heat, per_query


@torch.no_grad()
def match_logits(
    model: ALBEF, images: np.ndarray, image_index: Sequence[int], texts: Sequence[str], batch: int = 256
) -> Tensor:
    """``(N, 2)`` ITM logits (no match, match) of the pairs ``(images[image_index[i]], texts[i])``, eval mode."""
    device = next(model.parameters()).device
    out = [torch.zeros(0, 2)]
    with evaluating(model):
        tokens = _image_tokens(model, images, list(image_index), batch)
        for start in range(0, len(texts), batch):
            sl = slice(start, start + batch)
            enc = model.text.tokenize(list(texts[sl]))
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            image_tokens = torch.stack([tokens[i] for i in image_index[sl]])
            out.append(model.itm_logits(image_tokens, model.encode_text(ids, mask), mask).float().cpu())
    return torch.cat(out)


def itm_accuracy(positive_logits: Tensor, negative_logits: Tensor) -> float:
    """Accuracy of "match iff softmax p(match) > 0.5" over matching pairs (``positive_logits``, label 1) and
    as many non-matching ones (label 0); ``(N, 2)`` logits ordered (no match, match). A tie (p = 0.5) is
    predicted as no match. Balanced 1:1, so chance is 0.5 whatever the model's bias."""
    if len(positive_logits) != len(negative_logits) or not len(positive_logits):
        raise ValueError(f"ITM accuracy needs as many negatives as positives, at least one; got "
                         f"{len(positive_logits)} and {len(negative_logits)}")
    p_pos = torch.softmax(positive_logits.float(), dim=-1)[:, 1]
    p_neg = torch.softmax(negative_logits.float(), dim=-1)[:, 1]
    return float(((p_pos > 0.5).sum() + (p_neg <= 0.5).sum()) / (2 * len(p_pos)))


def _match_accuracy(model: ALBEF, images: np.ndarray, pairs: MatchPairs, batch: int) -> tuple[float, int] | None:
    """ITM accuracy (``itm_accuracy``) and number of pairs over the texts of ``pairs`` that have a negative
    (each positive with its negative, on the same image); ``None`` if none has one."""
    keep = [i for i, t in enumerate(pairs.negatives) if t is not None]
    if not keep:
        return None
    index = [pairs.image_index[i] for i in keep] * 2  # positives, then their negatives on the same images
    texts = [pairs.texts[i] for i in keep] + [pairs.negatives[i] for i in keep]
    logits = match_logits(model, images, index, texts, batch)  # type: ignore[arg-type]
    return itm_accuracy(logits[: len(keep)], logits[len(keep) :]), 2 * len(keep)


def evaluate_itm(model: ALBEF, data: GroundingSet, batch: int = 256) -> dict[str, float]:
    """Image-text matching, 1:1 against negatives of other images: ``itm_acc`` / ``n_itm_pairs`` on the
    queries (phrases, expressions) that have a negative and, on Flickr-style splits, ``caption_itm_acc`` /
    ``n_caption_itm_pairs`` on their whole captions. A number is left out where no pair has a negative
    (no made-up value)."""
    out: dict[str, float] = {}
    if got := _match_accuracy(model, data.images, MatchPairs(data.image_index, data.texts,
                                                              data.negative_texts or []), batch):
        out |= {"itm_acc": got[0], "n_itm_pairs": got[1]}
    if data.captions is not None and (got := _match_accuracy(model, data.images, data.captions, batch)):
        out |= {"caption_itm_acc": got[0], "n_caption_itm_pairs": got[1]}
    return out


CURVE_SPLIT = ("flickr", "val")  # the learning curves' split (pre-training phase and every run)


def curve_set(data_dir: Path, samples: int, source: str = "world", image_size: int | None = None) -> GroundingSet:
    """The first ``samples`` queries of ``CURVE_SPLIT``, with their controls (``amc.data.open_split``)."""
    name, split = CURVE_SPLIT
    return grounding_set(open_split(data_dir, name, split, source), f"{name}/{split}", samples, image_size=image_size)


def curve_point(model: ALBEF, data: GroundingSet, layer: int) -> dict[str, float]:
    """One learning-curve point: ``val_pointing`` (and its other-phrase control), ``val_itm_acc`` and
    ``val_caption_itm_acc`` (where ``evaluate_itm`` has them)."""
    scores, _, _ = evaluate_grounding(model, data, layer)
    point = {"val_pointing": scores["pointing"]}
    point |= {f"val_{k}": v for k, v in evaluate_itm(model, data).items() if k.endswith("itm_acc")}
    if "pointing_other_phrase" in scores:
        point |= {"val_pointing_paired": scores["pointing_paired"],
                  "val_pointing_other_phrase": scores["pointing_other_phrase"]}
    return point


FIGURE_SPLITS = ("flickr.test", "refcoco+.testA", "refcoco+.testB")  # splits whose first heatmaps are saved


def evaluate_splits(
    model: ALBEF, eval_sets: Mapping[str, GroundingSet], layer: int, batch: int = 256, heatmap_images: int = 0
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, np.ndarray], dict[str, dict[str, list[int | None]]]]:
    """Every split of ``eval_sets`` (keys ``<set>.<split>``): the nested metrics ``{set: {split: scores}}``
    (``evaluate_grounding``, plus ``evaluate_itm`` on ``ITM_SETS``), the first ``heatmap_images`` heatmaps
    of the ``FIGURE_SPLITS``, and the per-query hits by split key (``hits.json``)."""
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    heatmaps: dict[str, np.ndarray] = {}
    hits: dict[str, dict[str, list[int | None]]] = {}
    for key, data in eval_sets.items():
        name, split = key.split(".", 1)
        scores, heat, hits[key] = evaluate_grounding(model, data, layer, batch)
        if name in ITM_SETS:
            scores |= evaluate_itm(model, data, batch)
        metrics.setdefault(name, {})[split] = scores
        if heatmap_images and key in FIGURE_SPLITS:
            heatmaps[key] = heat[:heatmap_images].numpy().astype(np.float32)
            heatmaps[f"{key}/other"] = _other_phrase_heatmaps(model, data, heatmap_images, layer, batch)
    return metrics, heatmaps, hits


def _other_phrase_heatmaps(model: ALBEF, data: GroundingSet, k: int, layer: int, batch: int) -> np.ndarray:
    """Heatmaps of the first ``k`` queries' other phrases (NaN where a query has none): the figure of two
    phrases of one image, which shows whether the map follows the text."""
    k = min(k, len(data))
    keep = [i for i in range(k) if data.other_texts[i] is not None]  # type: ignore[index]
    out = np.full((k, *data.images.shape[1:3]), np.nan, dtype=np.float32)
    if keep:
        other = data.subset(keep, [data.other_texts[i] for i in keep])  # type: ignore[index,misc]
        out[keep] = grounding_heatmaps(model, other, layer, batch).numpy()
    return out


# Metric -> the GroundingSet texts it is computed from (None: missing), and what they are (for the error).
_CONTROL_TEXTS = {
    "pointing_other_phrase": (lambda d: d.other_texts, "another phrase of the same image about other objects"),
    "itm_acc": (lambda d: d.negative_texts, "an ITM negative (a text of another image, not true of its own)"),
    "caption_itm_acc": (lambda d: d.captions.negatives if d.captions else [],
                        "a whole caption with an ITM negative (Flickr-style records: phrases within captions)"),
}


def check_controls(eval_sets: Mapping[str, GroundingSet], gates: Sequence[Mapping[str, Any]]) -> None:
    """Fail if a gate's metric or control could not be computed on ``eval_sets``: its split is not
    evaluated, or no query there has the texts the metric needs. Called before training, not after it."""
    needed = {str(row[k]) for row in gates for k in ("metric", "control_metric") if k in row}
    for metric in sorted(needed):
        key, quantity = metric.rsplit(".", 1)
        data = eval_sets.get(key)
        if data is None:
            raise ValueError(f"gate on {metric}: split {key} is not evaluated (amc.eval.sets)")
        if quantity in _CONTROL_TEXTS:
            texts, what = _CONTROL_TEXTS[quantity]
            if all(t is None for t in texts(data)):
                raise ValueError(f"gate on {metric}: no query of {data.name} has {what}")


# --- one run --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    timing: dict[str, float]
    model: ALBEF


def build_model(params: AMCParams, albef_dir: Path) -> ALBEF:
    """The ``amc_pretrain`` stage's ALBEF, with this stage's trainable blocks and momentum settings."""
    model = load_pretrained(albef_dir)
    if not isinstance(model, ALBEF):
        raise ValueError(f"{albef_dir}: a {type(model).__name__} checkpoint; run `dvc repro amc_pretrain` first")
    built = {"text_layers": model.config.text_layers, "text_pooling": model.text.config.pooling}
    if stale := {k: v for k, v in built.items() if getattr(params, k) != v}:
        raise ValueError(f"{albef_dir}: pre-trained with {stale}, params.yaml says "
                         f"{ {k: getattr(params, k) for k in stale} } (amc section); re-run `dvc repro amc_pretrain`")
    return model.with_config(vision_trainable_blocks=params.vision_trainable_blocks, momentum=params.momentum,
                             distill_alpha=params.distill_alpha).train()


def run(
    params: AMCParams,
    variant_name: str,
    seed: int,
    data_dir: Path,
    albef_dir: Path,
    metrics_path: Path | None = None,
    run_dir: Path | None = None,
) -> RunResult:
    """Train and evaluate one variant with one seed; write the metrics JSON and run artefacts if paths given.
    ``data_dir``: ``data/world``, or ``data/real`` with ``amc.source: real``."""
    variant = params.variant(variant_name)
    t0 = time.perf_counter()
    model = build_model(params, albef_dir)
    n_fusion = len(model.fusion)
    if not -n_fusion <= variant.gradcam_layer < n_fusion:
        raise ValueError(f"amc.variants.{variant_name}.gradcam_layer (or amc.gradcam_layer) = "
                         f"{variant.gradcam_layer}: the model has {n_fusion} fusion layers (text_layers = "
                         f"{params.text_layers} of the BERT's layers)")  # fmt: skip
    size = model.visual.config.img_size
    splits = {(name, split): open_split(data_dir, name, split, params.source)  # every image checked first
              for name, split in [(params.train_set, "train"), *params.eval.splits()]}  # fmt: skip
    train_split = splits[params.train_set, "train"]
    if params.exclude_eval_images:
        train_split = without_images_of(train_split, [splits[k] for k in params.eval.splits()])
    train = RegionPairs(train_split, model.text.tokenizer, params.max_len, params.augment,
                        params.mlm_prob, variant.box_share, box_seed=seed, limit=params.train_limit,
                        image_size=size)  # type: ignore[arg-type]
    eval_sets = {f"{name}.{split}": grounding_set(splits[name, split], f"{name}/{split}", params.eval.max_samples,
                                                  image_size=size)
                 for name, split in params.eval.splits()}  # fmt: skip
    gates = gate_rows([variant_name], params.eval.sets)
    check_controls(eval_sets, gates)  # before training: a gate without its control would fail at the end
    t_setup = time.perf_counter()

    every = params.eval.curve_every
    curve_data = curve_set(data_dir, params.eval.curve_samples, params.source, size) if every else None

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return curve_point(m, curve_data, variant.gradcam_layer)  # type: ignore[arg-type]

    history = [{"step": 0, **evaluate(model)}] if every else []
    result = train_albef(model, train, train.collate, params, params, seed, variant,
                         f"amc-{variant_name}-{seed}", evaluate, every)  # fmt: skip
    history += result.history
    t_train = time.perf_counter()

    model.eval()
    scores, heatmaps, hits = evaluate_splits(model, eval_sets, variant.gradcam_layer, params.eval.batch_size,
                                             params.eval.heatmap_images)
    metrics: dict[str, Any] = {"train": {k: v for k, v in result.metrics.items() if k != "step"}, **scores}
    t_eval = time.perf_counter()
    timing = {"setup_s": t_setup - t0, "train_s": t_train - t_setup, "eval_s": t_eval - t_train,
              "total_s": t_eval - t0, "steps": params.steps}
    metrics["seconds"] = timing["total_s"]  # the run's wall time (the report's summary sums it)

    if metrics_path is not None:
        write_metrics(metrics_path, "amc", metrics, variant=variant_name, seed=seed,
                      claims=claim_rows(tuple(params.variants)), gates=gates)
    if run_dir is not None:
        run_dir = Path(run_dir)
        write_json(run_dir / "history.json", history)
        write_json(run_dir / "timing.json", timing)
        write_json(run_dir / "hits.json", hits)
        write_json(run_dir / "train_set.json", {"regions": len(train_split.records),
                                                "held_out_images": train_split.meta.get("held_out_images")})
        _save_heatmaps(run_dir / "heatmaps.npz", heatmaps, eval_sets)
    return RunResult(metrics, history, timing, model)


def _save_heatmaps(path: Path, heatmaps: dict[str, np.ndarray], eval_sets: dict[str, GroundingSet]) -> None:
    """Heatmaps of the first samples of the figure splits, with their images, texts and boxes, and the maps of
    their other phrases (``other_heat``, ``other_text``; npz, atomic)."""
    from vlrepro.io import atomic_write

    arrays: dict[str, np.ndarray] = {}
    for key, heat in heatmaps.items():
        if key.endswith("/other"):
            continue
        data, k = eval_sets[key], len(heat)
        arrays[f"{key}/heat"] = heat
        if f"{key}/other" in heatmaps:
            arrays[f"{key}/other_heat"] = heatmaps[f"{key}/other"]
            arrays[f"{key}/other_text"] = np.array([t or "" for t in data.other_texts[:k]])  # type: ignore[index]
        arrays[f"{key}/image"] = np.asarray(data.images[data.image_index[:k]])
        arrays[f"{key}/text"] = np.array(data.texts[:k])
        boxes = np.full((k, max(len(b) for b in data.boxes[:k]), 4), np.nan, dtype=np.float32)
        for i, bs in enumerate(data.boxes[:k]):
            boxes[i, : len(bs)] = bs
        arrays[f"{key}/boxes"] = boxes
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
