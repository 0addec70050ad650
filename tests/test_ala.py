"""ALA on a tiny world: the attention map's range, what the Alternative Epoch Architect freezes, that the
frozen CLIP never moves, that the adapter learns a tiny training set, and the run's scores and rows."""

from pathlib import Path

import pytest
import torch

from vlrepro.ala.__main__ import claims, gates
from vlrepro.ala.config import ALAParams
from vlrepro.ala.data import load_world_cub
from vlrepro.ala.model import ALA, ALAConfig, ala_loss, minmax
from vlrepro.ala.run import score, train
from vlrepro.config import ConfigError
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import build_suite
from vlrepro.models.backbones import ViTBackbone, ViTConfig
from vlrepro.report.gate_rows import GateError, check_gates

TINY = {
    "referring": {"train": 2, "val": 2, "testA": 2, "testB": 2},
    "flickr": {"train": 2, "val": 2, "test": 2},
    "vg": {"train": 2, "val": 2},
    "det": {"train": 2, "test": 2},
    "odinw": {"shots": 1, "test": 2},
    "captions": {"train": 2, "val": 2, "test": 2},
    "web": {"train": 2},
    "cub": {"train": 24, "val": 4, "test": 6, "species": 3},
}


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_suite(WorldConfig.model_validate({"seed": 0, **TINY}), out, progress=False)
    return out / "cub"


def tiny_vit() -> ViTBackbone:
    torch.manual_seed(0)
    return ViTBackbone(ViTConfig(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2))


def tiny_params(**train) -> ALAParams:
    return ALAParams.model_validate({
        "model": {"side_dim": 16, "side_heads": 2, "queries": 4, "pb_dim": 16},
        "train": {"steps": 4, "batch_size": 8, "warmup_steps": 0, "eval_every": 0, **train},
        "explain": {"images": 6, "steps": 4, "rise_masks": 8, "worst": 3}, "examples": 2,
    })  # fmt: skip


def tiny_ala(side_branch: bool = True, attention: bool = True) -> ALA:
    cfg = ALAConfig(clip_dim=32, clip_layers=(0, 1), num_classes=3, side_branch=side_branch, attention=attention,
                    side_dim=16, side_heads=2, queries=4, pb_dim=16)  # fmt: skip
    return ALA(tiny_vit(), cfg)


def test_attention_is_min_max_scaled_per_image_and_upsampled_for_explanations():
    assert minmax(torch.tensor([[[[2.0, 4.0], [3.0, 6.0]]]])).flatten().tolist() == pytest.approx([0, 0.5, 0.25, 1])
    model = tiny_ala().eval()
    out = model(torch.rand(3, 3, 64, 64))
    assert out.attention.shape == (3, 1, 8, 8) and out.ab_logits.shape == (3, 3)
    assert torch.allclose(out.attention.amin(dim=(-2, -1)), torch.zeros(3, 1), atol=1e-6)
    assert torch.allclose(out.attention.amax(dim=(-2, -1)), torch.ones(3, 1), atol=1e-4)
    assert model.explain(torch.rand(2, 3, 64, 64)).shape == (2, 64, 64)
    with pytest.raises(ValueError, match="post hoc"):
        tiny_ala(attention=False).explain(torch.rand(1, 3, 64, 64))


def test_ala_loss_adds_the_weighted_attention_branch_term():
    logits, ab, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy
    out = ala_loss(type("O", (), {"logits": logits, "ab_logits": ab})(), labels, 1 / 15)
    assert out["loss"].item() == pytest.approx((ce(logits, labels) + ce(ab, labels) / 15).item())
    off = ala_loss(type("O", (), {"logits": logits, "ab_logits": None})(), labels, 1 / 15)
    assert off["loss"].item() == pytest.approx(ce(logits, labels).item())


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_aea_off_epochs_train_only_the_perception_branch_and_clip_never_moves():
    model = tiny_ala().train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    clip, side, ab, pb = (_snapshot(m) for m in (model.clip, model.side, model.ab, model.pb))
    images, labels = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    model.attention_on = False  # an AEA "off" epoch
    ala_loss(model(images), labels, 1 / 15)["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert _changed(pb, model.pb) and not _changed(side, model.side) and not _changed(ab, model.ab)
    model.attention_on = True
    ala_loss(model(images), labels, 1 / 15)["loss"].backward()
    opt.step()
    assert _changed(side, model.side) and _changed(ab, model.ab)
    assert not _changed(clip, model.clip) and not any(p.requires_grad for p in model.clip.parameters())


@pytest.mark.parametrize("variant", ["full", "aea_only", "sbn_only"])
def test_ala_learns_a_tiny_training_set(cub, variant):
    data = load_world_cub(cub / "train")
    overrides = {"full": {}, "aea_only": {"model.side_branch": False}, "sbn_only": {"train.aea": False}}[variant]
    p = tiny_params(steps=80, lr=3e-3).model_copy(update={"variants": {variant: overrides}}).variant(variant)
    torch.manual_seed(0)
    model = tiny_ala(side_branch=p.model.side_branch)
    before = (model.eval()(data.batch(slice(None))).logits.argmax(-1) == data.labels).float().mean().item()
    history = train(model.train(), data, p, seed=0)
    after = (model.eval()(data.batch(slice(None))).logits.argmax(-1) == data.labels).float().mean().item()
    assert after >= 0.9 and after > before
    assert history[-1]["ce_pb"] < history[0]["ce_pb"]
    assert model.attention_on  # training leaves the attention on for evaluation


def test_score_reports_every_metric_and_its_controls(cub):
    test = load_world_cub(cub / "test")
    p = tiny_params()
    metrics, examples = score(tiny_ala(), lambda images, t: torch.rand(len(images), 64, 64), test, p, seed=0)
    m = metrics["cub"]["test"]
    for key in ("accuracy", "miou", "miou_half", "miou_blob", "miou_random", "miou_half_blob", "insertion",
                "deletion", "worst_over_attended"):  # fmt: skip
        assert 0.0 <= m[key] <= 1.0, key
    assert m["id"] == pytest.approx(m["insertion"] - m["deletion"]) and m["chance"] == pytest.approx(1 / 3)
    assert len(examples["maps"]) == 2 and len(examples["insertion_curve"]) == p.explain.steps + 1
    check_gates(gates("full"), "full-0.json", "full", metrics)  # the gate names metrics the run writes


def test_claims_and_gates_name_the_runs_metrics():
    rows = claims(["full", "aea_only", "sbn_only"], ("gradcam", "rise", "rollout"))
    assert {(r["variant"], r["reference_variant"]) for r in rows} >= {("full", "rise"), ("full", "aea_only"),
                                                                      ("sbn_only", "aea_only")}  # fmt: skip
    assert not claims(["full"], ())  # nothing to compare
    with pytest.raises(GateError):
        check_gates([gates("full")[0] | {"rule": "half"}], "full-0.json", "full", {})


def test_params_reject_unknown_methods_and_variants():
    with pytest.raises(ValueError, match="unknown methods"):
        ALAParams.model_validate({"baselines": ["lime"]})
    with pytest.raises(ConfigError, match="no variant 'nope'"):
        ALAParams().variant("nope")
