"""``TrainConfig``: the settings of the shared training loop, one params.yaml section per stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vlrepro.config import Section


class TrainConfig(Section):
    """Everything ``fit`` needs besides the model, data and loss.

    Steps count optimizer updates; ``batch_size`` is the global batch (split across DDP ranks).
    """

    steps: int = Field(1000, ge=1, description="optimizer updates in the whole run")
    batch_size: int = Field(32, ge=1, description="global batch size (all ranks together)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate of groups that do not set their own")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from lr/warmup_steps to lr")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine ends at lr * min_lr_ratio")
    milestones: tuple[int, ...] = Field((), description="step schedule: multiply lr by gamma at these steps")
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 = no clipping")
    seed: int = Field(0, ge=0)
    shuffle: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 if supported, else fp16)")
    cpu_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="on CPU: bf16 autocast, faster only for large enough matmuls (benchmarks/bench_train.py)"
    )
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms (warn-only) during fit")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    log_every: int = Field(10, ge=1, description="steps between history records")
    eval_every: int = Field(0, ge=0, description="steps between evaluations; 0 = only at the end")
    ckpt_every: int = Field(200, ge=0, description="steps between checkpoints; 0 = only at the end")
    resume: bool = Field(True, description="continue from out_dir/last.pt when it is compatible")
    progress: bool = True
    find_unused_parameters: bool = Field(False, description="DDP option for models with unused branches")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v

    @field_validator("milestones")
    @classmethod
    def _milestones_increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in v) or any(a >= b for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("milestones must be strictly increasing steps >= 1")
        return v


# Settings that change the optimisation trajectory: a checkpoint written under different values is not
# resumed. Everything else (device, logging, workers, ...) may change between a run and its resume.
TRAJECTORY_KEYS: tuple[str, ...] = (
    "steps", "batch_size", "lr", "weight_decay", "betas", "eps", "schedule", "warmup_steps", "min_lr_ratio",
    "milestones", "gamma", "grad_clip", "seed", "shuffle", "cpu_precision",
)  # fmt: skip
