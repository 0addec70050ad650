from __future__ import annotations

import json
import math
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from vlrepro.train import TrainConfig, fit, groups_by_prefix, lr_factor, move_to, run_dir


def _teacher_data(n: int = 256) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    teacher = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        y = teacher(x).squeeze(-1)
    return TensorDataset(x, y)


class MLP(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Dropout(dropout))
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


def mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": nn.functional.mse_loss(model(x), y)}


def _cfg(**kw: object) -> TrainConfig:
    base = {"steps": 30, "batch_size": 16, "lr": 1e-2, "log_every": 5, "ckpt_every": 10, "progress": False}
    return TrainConfig(**(base | kw))


def test_tiny_mlp_learns_and_writes_its_outputs(tmp_path: Path) -> None:
    data = _teacher_data()
    x, y = data.tensors
    baseline = float(y.var())
    cfg = _cfg(steps=400, batch_size=32, lr=2e-2, warmup_steps=20, log_every=50, ckpt_every=200, progress=True)
    evaluate = lambda m: {"val_mse": float(nn.functional.mse_loss(m(x), y).detach())}  # noqa: E731
    result = fit(MLP(), data, mse, cfg, tmp_path, evaluate=evaluate)

    assert result.metrics["val_mse"] < 0.05 * baseline, (result.metrics, baseline)
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 5
    assert result.start_step == 0
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics
    assert set(result.metrics) == {"step", "loss", "val_mse"} and result.metrics["step"] == 400
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in result.model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "last.pt", "metrics.json", "model.pt"]


def test_logged_lr_follows_the_schedule(tmp_path: Path) -> None:
    cfg = _cfg(steps=12, schedule="step", milestones=(4, 8), gamma=0.5, warmup_steps=2, log_every=1)
    history = fit(MLP(), _teacher_data(), mse, cfg, tmp_path).history
    # record `step` k is the k-th update, which used factor(k - 1)
    assert [r["lr"] for r in history] == pytest.approx([1e-2 * lr_factor(r["step"] - 1, cfg) for r in history])
    assert [r["lr"] for r in history][:5] == pytest.approx([5e-3, 1e-2, 1e-2, 1e-2, 5e-3])


def test_gradient_clipping_bounds_the_norm(tmp_path: Path) -> None:
    def huge(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": 1e4 * mse(model, batch)["loss"]}

    def grad_norm(model: nn.Module) -> float:
        return float(nn.utils.get_total_norm([p.grad for p in model.parameters()]))

    seen: list[tuple[float, float | None]] = []
    cb = lambda step, record, model: seen.append((grad_norm(model), record and record["grad_norm"]))  # noqa: E731
    fit(MLP(), _teacher_data(), huge, _cfg(steps=10, grad_clip=0.5, log_every=1), tmp_path / "a", callbacks=[cb])
    assert all(after <= 0.5 * (1 + 1e-5) for after, _ in seen)
    assert all(before is not None and before > 0.5 for _, before in seen)  # the record keeps the pre-clip norm

    seen.clear()
    fit(MLP(), _teacher_data(), huge, _cfg(steps=3, grad_clip=0, log_every=1), tmp_path / "b", callbacks=[cb])
    assert all(after == pytest.approx(before) and after > 0.5 for after, before in seen)  # 0 = off


def test_evaluation_is_recorded_and_does_not_change_training(tmp_path: Path) -> None:
    calls: list[int] = []

    def evaluate(model: nn.Module) -> dict[str, float]:
        assert not model.training
        calls.append(1)
        torch.rand(100)  # consumes the global RNG; the loop must restore it
        return {"score": float(len(calls))}

    cfg = _cfg(steps=20, eval_every=6, log_every=4)
    with_eval = fit(MLP(dropout=0.3), _teacher_data(), mse, cfg, tmp_path / "a", evaluate=evaluate)
    without = fit(MLP(dropout=0.3), _teacher_data(), mse, cfg, tmp_path / "b")
    assert [r["step"] for r in with_eval.history] == [4, 6, 8, 12, 16, 18, 20]
    assert [r.get("score") for r in with_eval.history] == [None, 1, None, 2, None, 3, 4]
    assert with_eval.metrics["score"] == 4 and with_eval.model.training
    a, b = with_eval.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # also: same seed, same bits


def test_in_process_resume_after_a_crash_matches(tmp_path: Path) -> None:
    cfg = _cfg(steps=20, ckpt_every=4, log_every=2)
    ref = fit(MLP(dropout=0.3), _teacher_data(), mse, cfg, tmp_path / "ref")

    def crash(step: int, record: dict | None, model: nn.Module) -> None:
        if step == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(MLP(dropout=0.3), _teacher_data(), mse, cfg, tmp_path / "run", callbacks=[crash])
    resumed = fit(MLP(dropout=0.3), _teacher_data(), mse, cfg, tmp_path / "run")
    assert resumed.start_step == 8
    assert resumed.history == ref.history
    assert all(torch.equal(v, ref.model.state_dict()[k]) for k, v in resumed.model.state_dict().items())

    calls: list[int] = []
    again = fit(MLP(), _teacher_data(), lambda m, b: calls.append(1) or mse(m, b), cfg, tmp_path / "run")
    assert again.start_step == 20 and not calls and again.metrics == ref.metrics  # finished: nothing to do


def test_incompatible_checkpoint_is_set_aside(tmp_path: Path) -> None:
    fit(MLP(), _teacher_data(), mse, _cfg(steps=10), tmp_path)
    with pytest.warns(UserWarning, match=r"lr: 0.01 -> 0.02"):
        result = fit(MLP(), _teacher_data(), mse, _cfg(steps=10, lr=2e-2), tmp_path)
    assert result.start_step == 0 and (tmp_path / "last.pt.incompatible").exists()

    class Wider(MLP):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)[..., 0]  # type: ignore[index]

    with pytest.warns(UserWarning, match="different model"):
        assert fit(Wider(), _teacher_data(), mse, _cfg(steps=10, lr=2e-2), tmp_path).start_step == 0

    with pytest.warns(UserWarning, match="belongs to run '', this is 'data-v1'"):
        fit(MLP(), _teacher_data(), mse, _cfg(steps=10), tmp_path, run_id="data-v1")
    with pytest.warns(UserWarning, match="belongs to run 'data-v1', this is 'data-v2'"):
        assert fit(MLP(), _teacher_data(), mse, _cfg(steps=10), tmp_path, run_id="data-v2").start_step == 0

    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot be read"):
        fit(MLP(), _teacher_data(), mse, _cfg(steps=10), tmp_path)
    assert fit(MLP(), _teacher_data(), mse, _cfg(steps=10, resume=False), tmp_path).start_step == 0


def test_param_groups_get_their_own_lr(tmp_path: Path) -> None:
    model = MLP()
    model.body[0].bias.requires_grad_(False)
    groups = groups_by_prefix(model, {"body.": 1e-3})
    assert [g["name"] for g in groups] == ["body", "rest"]
    assert len(groups[0]["params"]) == 1 and len(groups[1]["params"]) == 2  # the frozen bias is left out
    frozen = model.body[0].bias.detach().clone()
    cfg = _cfg(steps=4, schedule="constant", log_every=1)
    history = fit(model, _teacher_data(), mse, cfg, tmp_path, param_groups=groups).history
    assert history[-1]["lr/body"] == pytest.approx(1e-3) and history[-1]["lr/rest"] == pytest.approx(1e-2)
    assert history[-1]["lr"] == history[-1]["lr/body"]
    assert torch.equal(model.body[0].bias, frozen)


def test_loss_fn_contract_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="'loss'"):
        fit(MLP(), _teacher_data(), lambda m, b: {"mse": mse(m, b)["loss"]}, _cfg(steps=1), tmp_path / "a")
    nan = lambda m, b: {"loss": mse(m, b)["loss"] * math.nan}  # noqa: E731
    with pytest.raises(FloatingPointError, match="step 1"):
        fit(MLP(), _teacher_data(), nan, _cfg(steps=3, log_every=1), tmp_path / "b")
    with pytest.raises(ValueError, match="already has"):
        fit(MLP(), _teacher_data(), mse, _cfg(steps=2), tmp_path / "c", evaluate=lambda m: {"loss": 0.0})


class TurnsNaN:
    """MSE plus a logged ``aux`` term that becomes NaN at update ``at`` (counting calls from 1)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss = mse(model, batch)["loss"]
        aux = loss.detach() * (math.nan if self.calls >= self.at else 1.0)
        return {"loss": loss + 0.0 * aux if self.calls >= self.at else loss, "aux": aux}


def test_diverged_run_stops_naming_step_and_term_and_keeps_the_last_good_weights(tmp_path: Path) -> None:
    # log_every=10: the step that turns NaN is not a logging step, it must be caught anyway.
    cfg = _cfg(steps=12, log_every=10, ckpt_every=0, schedule="constant")  # lr independent of `steps`
    with pytest.raises(FloatingPointError, match=r"step 7: loss term\(s\) loss, aux not finite"):
        fit(MLP(), _teacher_data(), TurnsNaN(at=7), cfg, tmp_path / "nan")
    assert not (tmp_path / "nan" / "model.pt").exists() and not (tmp_path / "nan" / "metrics.json").exists()
    good = torch.load(tmp_path / "nan" / "last_good.pt", weights_only=True)
    six = fit(MLP(), _teacher_data(), mse, cfg.model_copy(update={"steps": 6}), tmp_path / "six").model
    assert all(torch.equal(good[k], v) for k, v in six.state_dict().items())  # the weights after update 6


def test_run_dir_is_removed_after_a_run_and_kept_when_training_diverged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with run_dir("fine") as out:
        fit(MLP(), _teacher_data(), mse, _cfg(steps=2), out)
    assert not out.exists() and not (tmp_path / "runs").exists()
    with pytest.raises(FloatingPointError, match="kept in runs/failed/broken-0"), run_dir("broken-0") as out:
        fit(MLP(), _teacher_data(), TurnsNaN(at=2), _cfg(steps=4), out)
    assert not out.exists() and (tmp_path / "runs" / "failed" / "broken-0" / "last_good.pt").is_file()


def test_determinism_flag_is_restored(tmp_path: Path) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    fit(MLP(), _teacher_data(), mse, _cfg(steps=1), tmp_path)
    assert torch.are_deterministic_algorithms_enabled() == before


Pair = namedtuple("Pair", "a b")


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor
    names: list[str]


def test_move_to_handles_nested_batches() -> None:
    t = torch.ones(2)
    batch = {"pair": Pair(t, [t, "s"]), "obj": Batch(t, ["a"]), "n": 3, "tup": (t,)}
    moved = move_to(batch, torch.device("cpu"))
    assert isinstance(moved["pair"], Pair) and isinstance(moved["obj"], Batch) and moved["n"] == 3
    assert moved["pair"].b[1] == "s" and isinstance(moved["tup"], tuple)
    assert torch.equal(moved["obj"].x, t)


def test_cpu_bf16_autocast_only_when_asked(tmp_path: Path) -> None:
    seen: list[tuple[bool, torch.dtype]] = []

    def recording(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        out = model(x)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return {"loss": nn.functional.mse_loss(out.float(), y)}

    data = _teacher_data(64)
    fp32 = fit(MLP(), data, recording, _cfg(steps=3, device="cpu"), tmp_path / "fp32")
    assert seen == [(False, torch.float32)] * 3
    seen.clear()
    bf16 = fit(MLP(), data, recording, _cfg(steps=3, device="cpu", cpu_precision="bf16"), tmp_path / "bf16")
    assert seen == [(True, torch.bfloat16)] * 3  # the linear layers ran in bf16
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # the weights stay fp32
    assert not torch.equal(fp32.model.head.weight, bf16.model.head.weight)
    # a checkpoint written in fp32 is not continued in bf16: another trajectory
    with pytest.warns(UserWarning, match="cpu_precision: 'fp32' -> 'bf16'"):
        again = fit(MLP(), data, recording, _cfg(steps=6, device="cpu", cpu_precision="bf16"), tmp_path / "fp32")
    assert again.start_step == 0
