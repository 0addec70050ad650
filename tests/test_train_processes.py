"""Real processes: a run killed with ``os._exit`` resumes to the same bits, and torchrun DDP on 2 CPU
ranks (gloo) matches a single process with the same global batch.

The same file is the training script the tests launch (``python tests/test_train_processes.py ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve()


# --- the child script ----------------------------------------------------------------------------------


class NoisyRegression(torch.utils.data.Dataset):
    """Fixed inputs plus augmentation noise drawn from the *global* torch RNG, as torchvision transforms do."""

    def __init__(self, n: int = 52) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.sin(self.x @ torch.randn(6, 2, generator=g))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.05 * torch.randn(6), self.y[i]


def make_model(dropout: float) -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, 2))


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = batch
    err = model(x) - y
    return {"loss": err.pow(2).mean(), "mae": err.abs().mean()}


def evaluate(model: nn.Module) -> dict[str, float]:
    ds = NoisyRegression()
    with torch.no_grad():
        # Draws from the global RNG on purpose: evaluation must not shift the training stream.
        x = ds.x + 0.05 * torch.randn_like(ds.x)
        return {"val_mse": float((model(x) - ds.y).pow(2).mean())}


def main(argv: list[str]) -> None:
    from vlrepro.train import TrainConfig, fit

    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--die-after", type=int, default=0, help="os._exit(1) right after this step")
    ap.add_argument("--die-in-save", type=int, default=0, help="os._exit(1) halfway through writing this checkpoint")
    ap.add_argument("--dropout", type=float, default=0.2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # same kernels in every process, and 2 ranks fit on 2 cores

    if args.die_in_save:
        real_save = torch.save

        def dying_save(obj: Any, f: Any, *a: Any, **kw: Any) -> Any:
            if isinstance(obj, dict) and obj.get("step") == args.die_in_save:
                f.write(b"half a checkpoint")
                f.flush()
                os._exit(1)
            return real_save(obj, f, *a, **kw)

        torch.save = dying_save

    def die(step: int, record: dict | None, model: nn.Module) -> None:
        if step == args.die_after:
            os._exit(1)

    cfg = TrainConfig(
        steps=20, batch_size=8, lr=3e-2, warmup_steps=3, min_lr_ratio=0.1, grad_clip=0.5,
        log_every=2, eval_every=6, ckpt_every=5, progress=False,
    )  # fmt: skip
    fit(make_model(args.dropout), NoisyRegression(), loss_fn, cfg, args.out_dir, evaluate=evaluate, callbacks=[die])


# --- the tests -----------------------------------------------------------------------------------------


def _start(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, *launcher, str(HERE), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return _wait(_start(*args, launcher=launcher))


def _weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / "model.pt", weights_only=True)


def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = _start(str(ref))  # in parallel with the interrupted chain: each process uses one thread

    # Dies after step 7: the checkpoint is from step 5, steps 6-7 are replayed.
    killed = _run(str(run), "--die-after", "7")
    assert killed.returncode == 1, killed.stderr
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 5
    assert not (run / "model.pt").exists()

    # Resumes from 5 and dies while writing the step-10 checkpoint: a stray temp file, last.pt still at 5.
    killed = _run(str(run), "--die-in-save", "10")
    assert killed.returncode == 1, killed.stderr
    assert "resuming" in killed.stderr and "step 5/20" in killed.stderr
    assert list(run.glob(".last.pt.*.tmp")), "expected the interrupted write to leave its temp file"
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 5

    done = _run(str(run))
    assert done.returncode == 0, done.stderr
    assert "step 5/20" in done.stderr
    assert not list(run.glob(".last.pt.*.tmp"))
    assert _wait(reference).returncode == 0

    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    for name in ("history.json", "metrics.json"):
        assert (run / name).read_text() == (ref / name).read_text(), name
    history = json.loads((run / "history.json").read_text())
    assert [r["step"] for r in history] == list(range(2, 21, 2))
    assert [r["step"] for r in history if "val_mse" in r] == [6, 12, 18, 20]


def test_ddp_two_cpu_ranks_match_one_process(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run(str(one), "--dropout", "0")
    assert single.returncode == 0, single.stderr
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    ddp = _run(str(two), "--dropout", "0", launcher=launcher)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr

    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    h1 = json.loads((one / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    assert [r["step"] for r in h1] == [r["step"] for r in h2]
    for r1, r2 in zip(h1, h2, strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    assert sorted(p.name for p in two.iterdir()) == ["history.json", "last.pt", "metrics.json", "model.pt"]


if __name__ == "__main__":
    main(sys.argv[1:])
