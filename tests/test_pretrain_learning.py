"""Each pre-training task learns on a tiny world (metric above the untrained model's), and the stage's
functions write checkpoints that load back."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vlrepro.data.records import load_split
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import build_suite
from vlrepro.models import load_pretrained
from vlrepro.models.backbones import CNNBackbone, CNNConfig, ViTBackbone, ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece
from vlrepro.pretrain import attributes, contrastive, downstream, mlm, run
from vlrepro.pretrain.config import PretrainParams
from vlrepro.pretrain.data import load_scene_images, train_texts
from vlrepro.train import TrainConfig, fit

TINY = {
    "referring": {"train": 24, "val": 8, "testA": 4, "testB": 4},
    "flickr": {"train": 4, "val": 2, "test": 2},
    "vg": {"train": 16, "val": 4},
    "det": {"train": 8, "test": 12},
    "odinw": {"shots": 1, "test": 2},
    "captions": {"train": 24, "val": 2, "test": 8},
    "web": {"train": 16},
    "cub": {"train": 4, "val": 2, "test": 8},
}
TEXT = {"vocab_size": 200, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_len": 24}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_suite(WorldConfig.model_validate(TINY), out, progress=False)
    return out


@pytest.fixture(scope="module")
def tokenizer(world):
    return train_wordpiece(train_texts(world), vocab_size=200)


def train(model, data, loss, tmp_path, steps, lr, batch_size=16, **kw):
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=5, ckpt_every=0, progress=False)
    fit(model, data, loss, cfg, tmp_path, **kw)


def small_text(tokenizer, mlm_head=True, pooling="cls"):
    return TextConfig(**{**TEXT, "vocab_size": tokenizer.get_vocab_size(), "mlm_head": mlm_head, "pooling": pooling})


def test_mlm_learns_world_text(world, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = TextEncoder(small_text(tokenizer), tokenizer)
    data = mlm.MaskedTexts(train_texts(world), tokenizer, 24, 0.15)
    before = mlm.evaluate_mlm(model, data)["mlm_acc"]
    train(mlm.MaskedLM(model), data, mlm.mlm_loss, tmp_path, 150, 3e-3, 32, collate_fn=data.collate)
    assert mlm.evaluate_mlm(model, data)["mlm_acc"] > before + 0.05  # ~0.09 vs ~0.001 (a vocabulary of 200)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_backbone_learns_attributes(world, tmp_path, kind):
    images = load_scene_images(world, ("vg", "web"), "train")
    space = attributes.AttributeSpace.from_meta(images.meta)
    data = attributes.AttributeImages(images, space, 4)
    torch.manual_seed(0)
    backbone = (
        CNNBackbone(CNNConfig(channels=(8, 16, 24, 32)))
        if kind == "cnn"
        else ViTBackbone(ViTConfig(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2))
    )
    model = attributes.AttributeModel(backbone, space, 4)
    mask = space.label_mask()
    before = attributes.evaluate_attributes(model, data, mask)
    train(model, data, lambda m, b: attributes.attribute_loss(m, b, space.classes_per_group, mask), tmp_path, 80, 3e-3)
    after = attributes.evaluate_attributes(model, data, mask)
    assert after["cell_acc"] > before["cell_acc"] + 0.1
    assert after["box_acc"] > before["box_acc"] + 0.1
    assert after["map"] > before["map"]


def test_clip_learns_to_retrieve(world, tokenizer, tmp_path):
    split = load_split(world / "captions" / "train")
    data = contrastive.CaptionPairs([split], tokenizer, 24)
    torch.manual_seed(0)
    vit = ViTConfig(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    model = DualEncoder(CLIPConfig(vision=vit, text=small_text(tokenizer, False, "mean"), embed_dim=16), tokenizer)
    before = contrastive.evaluate_retrieval(model, split)["r1"]
    train(model, data, contrastive.clip_loss, tmp_path, 100, 2e-3, 24, collate_fn=data.collate)
    assert contrastive.evaluate_retrieval(model, split)["r1"] > before + 0.2


def test_hard_negatives_are_false_swaps_and_leave_the_positive_draws_alone(world, tokenizer):
    import numpy as np

    from vlrepro.data.world.captions import caption_truth_matrix

    split = load_split(world / "captions" / "train")
    plain = contrastive.CaptionPairs([split], tokenizer, 24)
    hard = contrastive.CaptionPairs([split], tokenizer, 24, negatives=True)
    np.random.seed(0)
    a = [plain[i] for i in range(12)]
    np.random.seed(0)
    b = [hard[i] for i in range(12)]
    assert all(torch.equal(x[1], y[1]) and x[2] is None for x, y in zip(a, b, strict=True))  # same captions drawn
    batch = hard.collate(b)
    assert batch["negative_ids"].shape[0] == 12 and batch["has_negative"].float().mean() > 0.5
    for (_, _, negative, _), keep in zip(b, batch["has_negative"], strict=True):
        assert keep == (negative is not None)
    rng, swaps = np.random.default_rng(0), []
    for r in split.records[:60]:
        swapped = contrastive._false_swap(split, r.text, int(r.image), rng)
        if swapped is not None:  # one word apart (and its article), and false of the image the caption is true of
            assert sum(u != v for u, v in zip(r.text.split(), swapped.split(), strict=True)) in (1, 2)
            assert caption_truth_matrix(split, [r.text, swapped], [int(r.image)])[0].tolist() == [True, False]
            swaps.append(swapped)
    assert len(swaps) > 40


def test_rec_learns_the_boxes(world, tokenizer, tmp_path):
    data = downstream.ReferringExpressions(load_split(world / "refcoco" / "train"), tokenizer, 24)
    torch.manual_seed(0)
    cnn = CNNBackbone(CNNConfig(channels=(8, 16, 24, 32)))
    model = downstream.build_rec(cnn, TextEncoder(small_text(tokenizer), tokenizer), 32, 1, pretrained=False)
    before = downstream.evaluate_rec(model, data)
    train(model, data, downstream.rec_loss, tmp_path, 120, 3e-3, collate_fn=data.collate)
    assert downstream.evaluate_rec(model, data) > before + 0.1  # ~0.18 vs 0


def test_stage_functions_write_loadable_checkpoints(world, tmp_path):
    steps = {"steps": 2, "batch_size": 4, "warmup_steps": 0}
    params = PretrainParams.model_validate({
        "eval_images": 4,
        "cnn": {**steps, "channels": [8, 16, 24, 32]},
        "vit": {**steps, "embed_dim": 32, "depth": 1, "num_heads": 2},
        "text": {**steps, "vocab_size": 200, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                 "intermediate_size": 32},
        "clip": {**steps, "embed_dim": 16},
        "downstream": {**steps, "eval_every": 1, "dim": 32, "fusion_layers": 1, "max_eval": 6},
    })  # fmt: skip
    out = tmp_path / "ckpt"
    text = run.pretrain_text(params, world, out)
    cnn = run.pretrain_backbone("cnn", params, world, out)
    vit = run.pretrain_backbone("vit", params, world, out)
    clip = run.pretrain_clip(params, world, out, vit=vit.model, text=text.model)
    curve = run.downstream_curve(params, world, cnn=cnn.model, text=text.model)
    assert set(text.metrics) == {"mlm_acc"}
    assert set(cnn.metrics) == set(vit.metrics) == {"map", "cell_acc", "box_acc"}
    assert {"retrieval_r1", "zero_shot_cub_acc", "zero_shot_det_top1"} <= set(clip.metrics)
    assert set(curve.metrics["val_acc"]) == {"pretrained", "scratch"}
    points = [(p["init"], p["step"]) for p in curve.curve]
    assert points == [(i, s) for i in ("pretrained", "scratch") for s in (0, 1, 2)]
    for name, result in {"text": text, "cnn": cnn, "vit": vit, "clip": clip}.items():
        assert json.loads((out / name / "history.json").read_text())
        loaded = load_pretrained(out / name).state_dict()
        for k, v in result.model.state_dict().items():
            assert torch.equal(loaded[k], v.cpu()), k
    assert load_pretrained(out / "clip").text.config == clip.model.text.config


def test_clip_trains_the_started_towers_at_encoder_lr(world, tmp_path):
    """The towers loaded from the vit and text checkpoints train at ``clip.encoder_lr``, the projections at
    ``clip.lr``: with a negligible encoder_lr the towers keep their weights while the projections move."""
    kept = {"steps": 0, "batch_size": 4, "warmup_steps": 0}
    params = PretrainParams.model_validate({
        "eval_images": 4,
        "vit": {**kept, "embed_dim": 32, "depth": 1, "num_heads": 2},
        "text": {**kept, "vocab_size": 200, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                 "intermediate_size": 32},
    })  # fmt: skip
    text = run.pretrain_text(params, world, tmp_path)
    vit = run.pretrain_backbone("vit", params, world, tmp_path)

    def train_clip(lr: float, encoder_lr: float) -> DualEncoder:
        clip = {**kept, "steps": 3, "embed_dim": 16, "lr": lr, "encoder_lr": encoder_lr}
        p = params.model_copy(update={"clip": params.clip.model_validate(clip)})
        return run.pretrain_clip(p, world, tmp_path, vit=vit.model, text=text.model).model

    def change(a: nn.Module, b: nn.Module) -> float:
        return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters(), strict=True))

    frozen, towers_slow, all_fast = train_clip(1e-9, 1e-9), train_clip(1e-2, 1e-9), train_clip(1e-2, 1e-2)
    assert change(towers_slow.visual, vit.model) < 1e-6 and change(towers_slow.text, frozen.text) < 1e-6
    assert change(towers_slow.image_proj, frozen.image_proj) > 1e-3  # the projections train at lr
    assert change(all_fast.visual, vit.model) > 1e-3
