from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from vlrepro.train import load_checkpoint, save_checkpoint
from vlrepro.train.checkpoint import remove_stray_temp_files
from vlrepro.train.rng import get_rng_state, preserved_rng_state, set_rng_state


def _draw() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    random.gauss(0, 1)
    save_checkpoint(tmp_path / "c.pt", {"rng": get_rng_state(), "step": 3, "history": [{"loss": 1.0}]})
    expected = [_draw() for _ in range(3)] + [(np.random.standard_normal(), random.gauss(0, 1))]
    state = load_checkpoint(tmp_path / "c.pt")  # weights_only=True inside
    set_rng_state(state["rng"])
    assert [_draw() for _ in range(3)] + [(np.random.standard_normal(), random.gauss(0, 1))] == expected
    assert state["step"] == 3 and state["history"] == [{"loss": 1.0}]


def test_preserved_rng_state_restores_everything() -> None:
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    with preserved_rng_state():
        a = _draw()
    assert _draw() == a


def test_save_is_atomic_and_stray_temp_files_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    stray = tmp_path / ".last.pt.abc123.tmp"
    stray.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.abc.tmp"
    other.write_bytes(b"x")
    assert remove_stray_temp_files(path) == [stray]
    assert not stray.exists() and other.exists()
    assert load_checkpoint(path) == {"step": 1}
    assert remove_stray_temp_files(tmp_path / "missing" / "last.pt") == []
