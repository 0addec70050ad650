"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is written to a temp file and renamed over ``last.pt`` (``vlrepro.io.atomic_write``), so a
run killed mid-write leaves the previous checkpoint intact plus a stray ``.last.pt.*.tmp`` that the next
start removes. Everything in a checkpoint must be tensors, numbers, strings, lists, tuples or dicts, which
the weights-only unpickler accepts (see ``vlrepro.train.rng`` for the RNG states).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlrepro.io import atomic_write


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_stray_temp_files(path: str | Path) -> list[Path]:
    """Delete temp files that an interrupted ``atomic_write`` of ``path`` left behind."""
    path = Path(path)
    stray = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for p in stray:
        p.unlink(missing_ok=True)
    return stray
