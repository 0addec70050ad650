from __future__ import annotations

import math

import pytest
import torch

from vlrepro.train import TrainConfig, lr_factor, make_scheduler


def test_warmup_then_cosine_hand_values() -> None:
    cfg = TrainConfig(steps=10, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    # warm-up (s+1)/2, then the cosine spans updates 2..9 (7 intervals) from 1 down to exactly 0.1
    assert lr_factor(0, cfg) == pytest.approx(0.5)
    assert lr_factor(1, cfg) == pytest.approx(1.0)
    assert lr_factor(2, cfg) == pytest.approx(1.0)
    assert lr_factor(5, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(3 * math.pi / 7)))  # 0.65013442
    assert lr_factor(5, cfg) == pytest.approx(0.65013442, abs=1e-8)
    assert lr_factor(9, cfg) == pytest.approx(0.1)


def test_cosine_without_warmup_and_single_step() -> None:
    cfg = TrainConfig(steps=5, schedule="cosine")
    assert [round(lr_factor(s, cfg), 6) for s in range(5)] == [1.0, 0.853553, 0.5, 0.146447, 0.0]
    assert lr_factor(0, TrainConfig(steps=1, schedule="cosine", min_lr_ratio=0.3)) == pytest.approx(0.3)


def test_step_decay_at_milestones() -> None:
    cfg = TrainConfig(steps=10, schedule="step", milestones=(3, 6), gamma=0.5)
    assert [lr_factor(s, cfg) for s in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_constant_with_warmup() -> None:
    cfg = TrainConfig(steps=100, schedule="constant", warmup_steps=4)
    assert [lr_factor(s, cfg) for s in (0, 1, 3, 4, 99)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_scheduler_drives_each_group_by_the_same_ratio() -> None:
    cfg = TrainConfig(steps=6, warmup_steps=1, schedule="cosine", min_lr_ratio=0.2)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}])
    sched = make_scheduler(opt, cfg)
    for s in range(cfg.steps):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [1e-3 * lr_factor(s, cfg), 1e-4 * lr_factor(s, cfg)]
        )
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(0.2e-4)  # stays at the floor past the end
