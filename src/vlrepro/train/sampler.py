"""Batch order as a pure function of (seed, step), so a run can resume mid-epoch without replaying data.

The data stream is the concatenation of epoch permutations; global batch ``s`` is positions
``[s*B, (s+1)*B)`` of that stream, and DDP rank ``r`` of ``W`` takes the ``r``-th contiguous slice of
it. Nothing but the step needs saving, and a 2-rank run sees exactly the samples of a 1-rank run.

Per-sample randomness (augmentation through torch/numpy/random global RNGs) is made resumable too:
``SeededSamples`` seeds those RNGs from (seed, stream position) around each ``dataset[i]`` and restores
them afterwards, so data loading neither depends on nor disturbs the training RNG (dropout, ...), with or
without worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

from vlrepro.train.rng import cpu_rngs_restored, seed_cpu_rngs


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps ``start .. stop-1``, this rank's ``(position, index)`` pairs of each global batch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("the dataset is empty")
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world size {world_size}")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.start, self.stop = start, stop
        self._epoch, self._perm = -1, np.arange(n)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            # default_rng([seed, epoch]) hashes both through SeedSequence: independent, platform-stable orders
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else self._perm
            self._epoch = epoch
        return self._perm

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """All ``(position, dataset index)`` pairs of global batch ``step``."""
        out = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, i = divmod(pos, self.n)
            out.append((pos, int(self._order(epoch)[i])))
        return out

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's slice of global batch ``step``."""
        local = self.batch_size // self.world_size
        return self.global_batch(step)[self.rank * local : (self.rank + 1) * local]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while self.stop is None or step < self.stop:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an unbounded StepBatchSampler has no length")
        return max(0, self.stop - self.start)

    def state_dict(self, step: int) -> dict[str, int]:
        # The position is all there is to the state; the rest is recorded to catch a mismatched resume.
        return {"step": step, "seed": self.seed, "n": self.n, "batch_size": self.batch_size}


class SeededSamples(Dataset):
    """Wraps a map-style dataset; item ``(position, index)`` is ``dataset[index]`` under RNGs seeded by
    (seed, position)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        # DataLoader fetches a whole batch through here: one save/restore of the RNGs per batch.
        out = []
        with cpu_rngs_restored():
            for pos, index in keys:
                seed_cpu_rngs(int(np.random.SeedSequence([self.seed, pos]).generate_state(1, np.uint64)[0] >> 1))
                out.append(self.dataset[index])
        return out
