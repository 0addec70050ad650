"""One call per pre-trained model, as the ``pretrain`` notebook makes them.

Each function builds its model, measures it untrained (same architecture, random init, same evaluation),
trains it with the shared loop (``vlrepro.train.fit``, in a scratch folder: a stale run is never resumed),
measures it again and saves it with ``save_pretrained`` under ``out_dir/<name>/`` (plus its training
history). Every metric comes as ``{"pretrained": x, "untrained": y}``; ``seconds`` (the wall time of the
call) is kept apart from the metrics, which a re-run must reproduce exactly.

Order of use: ``pretrain_text`` -> ``pretrain_backbone("cnn")``, ``pretrain_backbone("vit")`` ->
``pretrain_clip(vit=..., text=...)`` -> ``downstream_curve(cnn=..., text=...)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vlrepro.data.records import load_split
from vlrepro.io import write_json
from vlrepro.models import save_pretrained
from vlrepro.models.backbones import CNNBackbone, CNNConfig, ViTBackbone, ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, TextEncoder, load_hf_text_encoder, load_minilm, train_wordpiece
from vlrepro.pretrain import attributes, contrastive, downstream, mlm
from vlrepro.pretrain.config import PretrainParams, TrainParams
from vlrepro.pretrain.data import held_out_texts, load_scene_images, train_texts
from vlrepro.train import TrainConfig, fit, groups_by_prefix, run_dir


@dataclass
class Pretrained:
    model: nn.Module
    metrics: dict[str, Any]  # {"metric": {"pretrained": x, "untrained": y}, ...}
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # downstream only: [{"step", "init", "acc"}]


def train_config(p: TrainParams, seed: int, **overrides: Any) -> TrainConfig:
    return TrainConfig(
        steps=max(p.steps, 1), batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay,
        warmup_steps=min(p.warmup_steps, max(p.steps - 1, 0)), schedule="cosine", seed=seed, ckpt_every=0,
        log_every=10, **overrides,
    )  # fmt: skip


def _local(key: str, load: Callable[[], Any]) -> Any:
    """``load()``; a missing local weights file or folder is re-raised naming its params.yaml key."""
    try:
        return load()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"pretrain.{key}: {e}; set it to a local file or folder, or to null") from None


def _fit(
    model: nn.Module, data: torch.utils.data.Dataset, loss: Callable, p: TrainParams, seed: int, **kw: Any
) -> list[dict[str, float]]:
    """Train in a scratch folder (nothing to resume from); no steps, no training."""
    if p.steps == 0:
        return []
    with run_dir("pretrain") as tmp:
        return fit(model, data, loss, train_config(p, seed), tmp, **kw).history


def _paired(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    return {k: {"pretrained": after[k], "untrained": before[k]} for k in after}


def _save(model: nn.Module, out_dir: Path, name: str, metrics: dict, history: list) -> None:
    folder = save_pretrained(model.cpu(), out_dir / name, meta={"metrics": metrics})
    write_json(folder / "history.json", history)


# --- text ----------------------------------------------------------------------------------------------


def pretrain_text(params: PretrainParams, data_dir: Path, out_dir: Path, seed: int = 0) -> Pretrained:
    """World BERT: WordPiece on the train texts, MLM; ``minilm`` / ``hf``: the real weights, saved as they are."""
    t0 = time.perf_counter()
    p = params.text
    if p.source != "world":
        if p.source == "minilm":
            model = load_minilm(p.max_len)
        else:
            model = _local("text.hf_path", lambda: load_hf_text_encoder(p.hf_path, p.max_len))
        _save(model, out_dir, "text", {}, [])
        return Pretrained(model, {}, time.perf_counter() - t0)
    texts = train_texts(data_dir)
    tokenizer = train_wordpiece(texts, p.vocab_size)
    cfg = TextConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=p.hidden_size, num_layers=p.num_layers,
        num_heads=p.num_heads, intermediate_size=p.intermediate_size, max_position=max(64, p.max_len),
        max_len=p.max_len,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = TextEncoder(cfg, tokenizer)
    train = mlm.MaskedTexts(texts, tokenizer, p.max_len, p.mask_prob)
    held_out = mlm.MaskedTexts(held_out_texts(data_dir, seen=texts), tokenizer, p.max_len, p.mask_prob)
    before = mlm.evaluate_mlm(model, held_out, seed)
    history = _fit(mlm.MaskedLM(model), train, mlm.mlm_loss, p, seed, collate_fn=train.collate)
    metrics = _paired(before, mlm.evaluate_mlm(model, held_out, seed))
    _save(model, out_dir, "text", metrics, history)
    return Pretrained(model, metrics, time.perf_counter() - t0, history)


# --- vision backbones ----------------------------------------------------------------------------------


def build_backbone(kind: Literal["cnn", "vit"], params: PretrainParams, image_size: int) -> CNNBackbone | ViTBackbone:
    if kind == "cnn":
        c = params.cnn
        cnn = CNNConfig(arch=c.arch, channels=c.channels, weights=c.weights)
        return _local("cnn.weights", lambda: CNNBackbone(cnn))
    v = params.vit
    cfg = ViTConfig(
        arch=v.arch, img_size=image_size, patch_size=v.patch_size, embed_dim=v.embed_dim, depth=v.depth,
        num_heads=v.num_heads, mlp_ratio=v.mlp_ratio, weights=v.weights,
    )  # fmt: skip
    return _local("vit.weights", lambda: ViTBackbone(cfg))


def pretrain_backbone(
    kind: Literal["cnn", "vit"], params: PretrainParams, data_dir: Path, out_dir: Path, seed: int = 0
) -> Pretrained:
    """Attribute pre-training (dense + scene heads) on the train images of ``params.image_sets``."""
    t0 = time.perf_counter()
    p = params.cnn if kind == "cnn" else params.vit
    train_images = load_scene_images(data_dir, params.image_sets, "train")
    space = attributes.AttributeSpace.from_meta(train_images.meta, params.hold_out_novel)
    train = attributes.AttributeImages(train_images, space, params.grid_stride)
    test_images = load_scene_images(data_dir, ("det",), "test", limit=params.eval_images)
    test = attributes.AttributeImages(test_images, space, params.grid_stride, augment=False)
    mask = space.label_mask()

    def evaluate(m: nn.Module) -> dict[str, float]:
        return attributes.evaluate_attributes(m, test, mask)

    torch.manual_seed(seed)
    model = attributes.AttributeModel(build_backbone(kind, params, train_images.image_size), space, params.grid_stride)
    before = evaluate(model)
    classes = space.classes_per_group
    history = _fit(model, train, lambda m, b: attributes.attribute_loss(m, b, classes, mask), p, seed)
    metrics = _paired(before, evaluate(model))
    _save(model.backbone, out_dir, kind, metrics, history)
    return Pretrained(model.backbone, metrics, time.perf_counter() - t0, history)


# --- CLIP ----------------------------------------------------------------------------------------------


def pretrain_clip(
    params: PretrainParams,
    data_dir: Path,
    out_dir: Path,
    seed: int = 0,
    vit: ViTBackbone | None = None,
    text: TextEncoder | None = None,
) -> Pretrained:
    """Contrastive training on world captions; with ``clip.init_towers`` the towers start from ``vit``/``text``."""
    t0 = time.perf_counter()
    p = params.clip
    if text is None or vit is None:
        raise ValueError("pretrain_clip needs the text encoder (its tokenizer and architecture) and the ViT")
    # Mean pooling: MLM never trains the [CLS] output, so a sentence is the average of its tokens (as MiniLM's).
    text_cfg = dataclasses.replace(text.config, mlm_head=False, pooling="mean")
    cfg = CLIPConfig(vision=vit.config, text=text_cfg, embed_dim=p.embed_dim, init_temperature=p.init_temperature)
    splits = contrastive.load_caption_splits(data_dir, p.sets)
    train = contrastive.CaptionPairs(splits, text.tokenizer, text.config.max_len, p.hard_negatives)
    held_out = load_split(data_dir / "captions" / "test")
    cub, det = load_split(data_dir / "cub" / "test"), load_split(data_dir / "det" / "test")

    def evaluate(m: DualEncoder) -> dict[str, float]:
        r, z = contrastive.evaluate_retrieval(m, held_out), contrastive.evaluate_zero_shot(m, cub, det)
        lenient = {"lenient_retrieval_r1": r["lenient_r1"]} if "lenient_r1" in r else {}  # world splits only
        return {"retrieval_r1": r["r1"], "i2t_r1": r["i2t_r1"], "t2i_r1": r["t2i_r1"], **lenient,
                "zero_shot_cub_acc": z["cub_acc"], "zero_shot_det_top1": z["det_top1"]}  # fmt: skip

    torch.manual_seed(seed)
    model = DualEncoder(cfg, text.tokenizer)
    before = evaluate(model)
    groups = None
    if p.init_towers:
        model.visual.load_state_dict(vit.state_dict())
        model.text.load_encoder(text)
        groups = groups_by_prefix(model, {"visual.": p.encoder_lr, "text.": p.encoder_lr})
    history = _fit(model, train, contrastive.clip_loss, p, seed, collate_fn=train.collate, param_groups=groups)
    metrics = _paired(before, evaluate(model))
    _save(model, out_dir, "clip", metrics, history)
    return Pretrained(model, metrics, time.perf_counter() - t0, history)


# --- downstream ----------------------------------------------------------------------------------------


def downstream_curve(
    params: PretrainParams,
    data_dir: Path,
    seed: int = 0,
    cnn: CNNBackbone | None = None,
    text: TextEncoder | None = None,
) -> Pretrained:
    """The minimal REC model from the pre-trained encoders and from random ones: Acc@0.5 curves on val."""
    t0 = time.perf_counter()
    p = params.downstream
    if cnn is None or text is None:
        raise ValueError("downstream_curve needs the pre-trained CNN and text encoder")
    tok, max_len = text.tokenizer, text.config.max_len
    train = downstream.ReferringExpressions(load_split(data_dir / p.dataset / "train"), tok, max_len)
    val = downstream.ReferringExpressions(load_split(data_dir / p.dataset / "val"), tok, max_len, limit=p.max_eval)
    cfg = train_config(p, seed, eval_every=p.eval_every)
    curve: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    for init in ("pretrained", "scratch"):
        torch.manual_seed(seed)
        model = downstream.build_rec(
            cnn, text, p.dim, p.fusion_layers, pretrained=init == "pretrained", grid_stride=params.grid_stride
        )
        if p.steps == 0:
            points = [{"step": 0, "acc": downstream.evaluate_rec(model, val)}]
        else:
            points = downstream.train_rec_curve(model, train, val, cfg, p.encoder_lr)
        curve += [{**pt, "init": init} for pt in points]
        models[init] = model

    def summary(init: str) -> dict[str, float]:
        accs = [pt["acc"] for pt in curve if pt["init"] == init]
        # The mean over the curve's points tells how early a run learns, not only where it ends.
        return {"val_acc": accs[-1], "val_acc_mean_over_curve": sum(accs) / len(accs)}

    # "scratch", not "untrained": both REC models train for the same steps, only their initialisation differs.
    metrics = {k: {"pretrained": v, "scratch": summary("scratch")[k]} for k, v in summary("pretrained").items()}
    return Pretrained(models["pretrained"], metrics, time.perf_counter() - t0, curve=curve)
