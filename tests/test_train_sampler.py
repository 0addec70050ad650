from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlrepro.train import StepBatchSampler
from vlrepro.train.sampler import SeededSamples


def _indices(batch: list[tuple[int, int]]) -> list[int]:
    return [i for _, i in batch]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 16), seed=st.integers(0, 2**31))
def test_every_epoch_visits_each_sample_once(n: int, batch_size: int, seed: int) -> None:
    sampler = StepBatchSampler(n, batch_size, seed)
    stream = [i for s in range(3 * n) for i in _indices(sampler.batch(s))]  # 3n batches >= 3 epochs
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))


def test_order_is_a_function_of_seed_and_step() -> None:
    a, b = StepBatchSampler(50, 8, seed=3), StepBatchSampler(50, 8, seed=3)
    # b jumps straight to step 17 (mid-epoch 3) without having produced anything before.
    assert b.batch(17) == a.batch(17)
    assert [a.batch(s) for s in range(20)] != [StepBatchSampler(50, 8, seed=4).batch(s) for s in range(20)]
    resumed = list(StepBatchSampler(50, 8, seed=3, start=11, stop=20))
    assert resumed == [a.batch(s) for s in range(11, 20)]
    assert len(StepBatchSampler(50, 8, seed=3, start=11, stop=20)) == 9


def test_no_shuffle_is_sequential_and_wraps() -> None:
    sampler = StepBatchSampler(5, 3, seed=0, shuffle=False)
    assert [_indices(sampler.batch(s)) for s in range(3)] == [[0, 1, 2], [3, 4, 0], [1, 2, 3]]


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_each_global_batch(world_size: int) -> None:
    full = StepBatchSampler(37, 8, seed=1)
    ranks = [StepBatchSampler(37, 8, seed=1, rank=r, world_size=world_size) for r in range(world_size)]
    for step in (0, 4, 9):
        parts = [r.batch(step) for r in ranks]
        assert all(len(p) == 8 // world_size for p in parts)
        assert [x for p in parts for x in p] == full.batch(step)


def test_batch_must_split_evenly() -> None:
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(10, 6, seed=0, world_size=4)
    with pytest.raises(ValueError, match="empty"):
        StepBatchSampler(0, 6, seed=0)


class _Augmented(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple[float, float, float]:
        return float(torch.rand(())) + i, float(np.random.rand()), random.random()


def test_seeded_samples_depend_on_position_only_and_leave_global_rngs_alone() -> None:
    ds = SeededSamples(_Augmented(), seed=0)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    before = torch.rand(()), np.random.rand(), random.random()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    first = ds.__getitems__([(10, 1), (11, 2)])
    assert (torch.rand(()), np.random.rand(), random.random()) == before  # global streams untouched
    assert ds[(11, 2)] == first[1]  # same (position, index): same augmentation, whatever came before
    assert ds[(12, 2)] != first[1]  # next epoch's visit of the same sample: fresh augmentation
    assert SeededSamples(_Augmented(), seed=1)[(11, 2)] != first[1]


def test_seeded_samples_through_workers_match_in_process() -> None:
    def batches(workers: int) -> list:
        sampler = StepBatchSampler(4, 2, seed=5, stop=4)
        data = SeededSamples(_Augmented(), 5)
        return list(torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=workers, collate_fn=list))

    assert batches(0) == batches(1)


def test_state_dict_records_the_position() -> None:
    assert StepBatchSampler(10, 4, seed=2).state_dict(7) == {"step": 7, "seed": 2, "n": 10, "batch_size": 4}


def test_counter_sanity_over_long_run() -> None:
    counts = Counter(i for s in range(100) for i in _indices(StepBatchSampler(10, 7, seed=0).batch(s)))
    assert set(counts.values()) == {70}
