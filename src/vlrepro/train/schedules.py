"""Learning-rate schedules as a closed-form factor of the step, driven by torch's ``LambdaLR``.

A closed form (rather than chaining ``LinearLR``/``CosineAnnealingLR`` in ``SequentialLR``) keeps the
value at step ``s`` exactly computable by hand, scales every param group by the same ratio (so an encoder
at 1e-5 and a head at 1e-4 both decay to ``min_lr_ratio`` of their own peak) and resumes from just
``last_epoch``.

Step ``s`` is the 0-based index of the optimizer update; the update at step ``s`` uses ``lr * factor(s)``.
"""

from __future__ import annotations

import bisect
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from vlrepro.train.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of each group's peak lr for update ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        # (s+1)/w rather than s/w so the first update is not wasted at lr 0.
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** bisect.bisect_right(cfg.milestones, step)
    # cosine: 1 at the end of warm-up, exactly min_lr_ratio at the last update
    span = cfg.steps - cfg.warmup_steps - 1
    progress = 1.0 if span <= 0 else min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: Optimizer, cfg: TrainConfig) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
