from __future__ import annotations

import pytest
from pydantic import ValidationError

from vlrepro.config import Section
from vlrepro.train import TrainConfig
from vlrepro.train.config import TRAJECTORY_KEYS


def test_defaults_are_valid_and_frozen() -> None:
    cfg = TrainConfig()
    assert isinstance(cfg, Section)
    assert (cfg.steps, cfg.batch_size, cfg.schedule, cfg.device) == (1000, 32, "cosine", "auto")
    with pytest.raises(ValidationError):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": 0},
        {"lr": 0},
        {"batch_size": 0},
        {"grad_clip": -1},
        {"min_lr_ratio": 1.5},
        {"gamma": 0},
        {"betas": (0.9, 1.0)},
        {"milestones": (5, 5)},
        {"milestones": (0,)},
        {"schedule": "exponential"},
        {"device": "tpu"},
        {"learning_rate": 1e-3},  # unknown key
    ],
)
def test_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        TrainConfig(**bad)


def test_yaml_lists_become_tuples() -> None:
    cfg = TrainConfig.model_validate({"milestones": [10, 20], "betas": [0.9, 0.95]})
    assert cfg.milestones == (10, 20) and cfg.betas == (0.9, 0.95)


def test_trajectory_keys_are_fields() -> None:
    assert set(TRAJECTORY_KEYS) <= set(TrainConfig.model_fields)
