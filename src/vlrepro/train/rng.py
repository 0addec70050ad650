"""Global RNG handling: seeding, saving/restoring as checkpoint-safe data, and isolating side work.

Training randomness (dropout, ...) comes from the global torch/numpy/random RNGs. Their states travel in
the checkpoint, stored as tensors, ints and lists so that ``torch.load(weights_only=True)`` accepts them.
Data loading and evaluation run inside ``preserved_rng_state`` so that they cannot shift that stream:
how often you evaluate never changes the trained weights.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


def get_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The states of torch (CPU and, on CUDA, ``device``), numpy and random, as weights-only-safe data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def preserved_rng_state(device: torch.device | None = None) -> Iterator[None]:
    """Run the block, then put every global RNG back where it was."""
    state = get_rng_state(device)
    try:
        yield
    finally:
        set_rng_state(state, device)


@contextmanager
def cpu_rngs_restored() -> Iterator[None]:
    """Run the block, then restore the CPU global RNGs of torch, numpy and random.

    Cheaper than ``preserved_rng_state`` (raw states, no conversion) and never touches CUDA.
    """
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def seed_cpu_rngs(seed: int) -> None:
    # Not torch.manual_seed: that would also reseed every GPU's generator behind the training loop's back.
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
