"""The one training loop used by every model of the study.

A newcomer's tour::

    from vlrepro.train import TrainConfig, fit

    cfg = TrainConfig(steps=2000, batch_size=64, lr=3e-4, warmup_steps=100, eval_every=500)
    result = fit(model, train_set, loss_fn, cfg, out_dir="runs/amc-full-0", evaluate=evaluate)
    result.history  # [{"step": 10, "loss": ..., "lr": ..., "grad_norm": ...}, ...]

- ``loss_fn(model, batch) -> {"loss": tensor, ...other terms to log}``; ``evaluate(model) -> {name: float}``.
- The loop is step-based: ``cfg.steps`` optimizer updates, batch ``s`` is a pure function of (seed, s)
  (``sampler``), the learning rate is a closed-form function of ``s`` (``schedules``).
- ``out_dir`` gets ``last.pt`` (checkpoint every ``ckpt_every`` steps; a re-run resumes from it),
  ``history.json`` (DVC plots), ``metrics.json`` (final numbers) and ``model.pt`` (final state_dict).
- The same call works under ``torchrun --nproc_per_node N``: DDP, each rank a slice of the global batch,
  rank 0 does all the writing (``distributed``). On CUDA it uses autocast (bf16, or fp16 + GradScaler); on
  CPU, bf16 autocast when ``cpu_precision`` says so.

Modules: ``config`` (TrainConfig), ``loop`` (fit), ``checkpoint`` (atomic save/load), ``rng`` (seeding
and RNG state), ``sampler`` (batch order), ``schedules`` (LR), ``distributed`` (torchrun helpers).
"""

from vlrepro.train.checkpoint import load_checkpoint, save_checkpoint
from vlrepro.train.config import TrainConfig
from vlrepro.train.loop import TrainResult, evaluating, fit, groups_by_prefix, move_to, run_dir
from vlrepro.train.rng import seed_everything
from vlrepro.train.sampler import StepBatchSampler
from vlrepro.train.schedules import lr_factor, make_scheduler

__all__ = [
    "TrainConfig",
    "TrainResult",
    "evaluating",
    "fit",
    "groups_by_prefix",
    "load_checkpoint",
    "lr_factor",
    "make_scheduler",
    "move_to",
    "run_dir",
    "save_checkpoint",
    "seed_everything",
    "StepBatchSampler",
]
