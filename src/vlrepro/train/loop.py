"""``fit``: the one step-based training loop behind every model of the study.

Each iteration is one optimizer update (``cfg.steps`` of them in all)::

    batch = the rank's slice of global batch `step`        (StepBatchSampler: a function of seed and step)
    terms = loss_fn(model, batch)                          (under autocast on CUDA; on CPU with cpu_precision bf16)
    backward, clip the global grad norm, AdamW step, LR schedule step
    every log_every steps: all-reduced loss terms, lr, grad norm -> history
    every eval_every steps and at the end: evaluate(model) -> same history record (rank 0)
    every ckpt_every steps and at the end: out_dir/last.pt + out_dir/history.json (rank 0)
    callbacks(step, record, model)

At the end rank 0 also writes ``out_dir/model.pt`` (the bare state_dict) and ``out_dir/metrics.json``.
Every rank reads ``last.pt`` on resume, so on several nodes ``out_dir`` must be on a shared filesystem.
When ``out_dir/last.pt`` exists and was written under the same trajectory settings, the run continues
from it; on CPU with the same seed it ends with bit-identical weights and history to a run that was never
interrupted, because the batch order, the per-sample augmentation seeds and the LR are functions of the
step, and the global RNG states travel in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vlrepro.io import write_json
from vlrepro.train import distributed as dist_utils
from vlrepro.train.checkpoint import load_checkpoint, remove_stray_temp_files, save_checkpoint
from vlrepro.train.config import TRAJECTORY_KEYS, TrainConfig
from vlrepro.train.distributed import DistEnv
from vlrepro.train.rng import get_rng_state, preserved_rng_state, seed_everything, set_rng_state
from vlrepro.train.sampler import SeededSamples, StepBatchSampler
from vlrepro.train.schedules import make_scheduler

LossFn = Callable[[nn.Module, Any], Mapping[str, Tensor | float]]
EvalFn = Callable[[nn.Module], Mapping[str, float]]
Callback = Callable[[int, "dict[str, float] | None", nn.Module], None]

CHECKPOINT_VERSION = 1


@dataclass
class TrainResult:
    model: nn.Module  # the bare model (never the DDP wrapper), on the training device
    history: list[dict[str, float]]  # the records also written to out_dir/history.json
    metrics: dict[str, float]  # final step, loss terms and evaluation; also out_dir/metrics.json
    start_step: int  # 0 for a fresh run, else the checkpoint step it resumed from


def fit(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: LossFn,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    evaluate: EvalFn | None = None,
    param_groups: Sequence[dict[str, Any]] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    callbacks: Sequence[Callback] = (),
    run_id: str = "",
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` updates and return it with its history.

    - ``loss_fn(model, batch)`` returns scalar tensors, at least ``"loss"`` (the one that is
      back-propagated); the others are only logged. Under DDP ``model`` is the DDP wrapper: compute the
      losses by calling ``model(...)`` so that gradients are synchronised.
    - ``evaluate(model)`` gets the bare model in eval mode on rank 0 and returns flat numeric metrics;
      its keys must differ from the loss terms. It runs with the RNG states saved and restored.
    - ``param_groups`` are torch optimizer groups (``{"params": [...], "lr": 1e-5, "name": "encoder"}``);
      a group without ``lr``/``weight_decay`` takes the config's. Default: every trainable parameter.
    - ``callbacks`` run after each step as ``cb(step, record_or_None, bare_model)``, after any checkpoint.
    - ``run_id`` names what the config cannot see — the data and the code version, e.g. a hash of the data
      manifest and the stage's params. A checkpoint with another ``run_id`` is never resumed, so a re-run
      on changed data cannot pick up (or, when finished, silently return) the old run's weights.
    """
    env = dist_utils.setup(cfg.device)
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark_before = torch.backends.cudnn.benchmark
    try:
        return _fit(
            model, dataset, loss_fn, cfg, Path(out_dir), env, evaluate, param_groups, collate_fn, callbacks, run_id
        )
    finally:
        # These switches are process-wide; a notebook that trains and then does other work gets them back.
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
        torch.backends.cudnn.benchmark = benchmark_before
        dist_utils.teardown(env)


def _fit(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: LossFn,
    cfg: TrainConfig,
    out_dir: Path,
    env: DistEnv,
    evaluate: EvalFn | None,
    param_groups: Sequence[dict[str, Any]] | None,
    collate_fn: Callable[[list[Any]], Any] | None,
    callbacks: Sequence[Callback],
    run_id: str,
) -> TrainResult:
    device = env.device
    if cfg.deterministic:
        # warn_only: an op without a deterministic kernel should not stop a long GPU run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        if device.type == "cuda":  # cuBLAS needs this for reproducible matmuls; only read at its first use
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_everything(cfg.seed + env.rank)  # ranks differ in dropout masks, as their samples differ

    model.to(device)
    optimizer = torch.optim.AdamW(
        _groups(model, param_groups), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    scheduler = make_scheduler(optimizer, cfg)
    amp_dtype = _amp_dtype(cfg, device)
    # Loss scaling is only needed for fp16; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("fit needs a map-style dataset with __len__ (batch order is computed from indices)") from None

    ckpt_path = out_dir / "last.pt"
    start, history, last_eval = 0, [], {}
    if env.is_main:
        remove_stray_temp_files(ckpt_path)
    if cfg.resume and ckpt_path.is_file():
        resumed = _resume(ckpt_path, cfg, env, model, optimizer, scheduler, scaler, n, run_id)
        if resumed is not None:
            start, history, last_eval = resumed
    train_model: nn.Module = model
    if env.distributed:
        train_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )

    sampler = StepBatchSampler(
        n, cfg.batch_size, cfg.seed, shuffle=cfg.shuffle, rank=env.rank, world_size=env.world_size,
        start=start, stop=cfg.steps,
    )  # fmt: skip
    if cfg.num_workers:  # forked workers tokenize too: the tokenizers library would warn in each of them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = DataLoader(
        SeededSamples(dataset, cfg.seed),
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: creating the iterator would otherwise draw from the global RNG (worker seeds).
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    batches = iter(loader)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=f"train {out_dir.name}",
        disable=not (env.is_main and cfg.progress),
        # In papermill/CI logs every refresh is a new line; keep them few there.
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )

    model.train()
    for step in range(start + 1, cfg.steps + 1):  # `step` = updates done once this iteration ends
        eval_now = evaluate is not None and (step == cfg.steps or (cfg.eval_every > 0 and step % cfg.eval_every == 0))
        log_now = eval_now or step == cfg.steps or step % cfg.log_every == 0

        batch = move_to(next(batches), device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            terms = loss_fn(train_model, batch)
        if bad := _non_finite(terms):
            # The weights are still those of the last good step: keep them, then stop the stage.
            if env.is_main:
                save_checkpoint(out_dir / "last_good.pt", model.state_dict())
                write_json(out_dir / "history.json", history)
            raise FloatingPointError(
                f"training diverged at step {step}: loss term(s) {', '.join(bad)} not finite; the weights after step "
                f"{step - 1} are in {out_dir / 'last_good.pt'}"
            )
        scaler.scale(terms["loss"]).backward()
        grad_norm = None
        if cfg.grad_clip > 0 or log_now:
            scaler.unscale_(optimizer)  # clip and report the true gradient, not the fp16-scaled one
            if cfg.grad_clip > 0:
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            else:
                grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        lrs = [g["lr"] for g in optimizer.param_groups]  # the lr this update uses
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        record: dict[str, float] | None = None
        if log_now:
            record = {"step": step, **_reduce_terms(terms, env, device)}
            record["lr"] = lrs[0]
            if len(lrs) > 1:
                for i, (group, lr) in enumerate(zip(optimizer.param_groups, lrs, strict=True)):
                    record[f"lr/{group.get('name', i)}"] = lr
            if grad_norm is not None and torch.isfinite(grad_norm):  # fp16 overflow steps are skipped anyway
                record["grad_norm"] = float(grad_norm)
        if eval_now:
            assert evaluate is not None and record is not None
            if env.is_main:
                last_eval = _evaluate(evaluate, model, device)
                if clash := sorted(set(last_eval) & set(record)):
                    raise ValueError(f"evaluate() returned keys that the training record already has: {clash}")
                record.update(last_eval)
            dist_utils.barrier(env)
        if record is not None:
            history.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
        bar.update(1)

        if step == cfg.steps or (cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0):
            state = _checkpoint_state(
                step, cfg, env, model, optimizer, scheduler, scaler, sampler, history, last_eval, run_id
            )
            if env.is_main:
                save_checkpoint(ckpt_path, state)
                write_json(out_dir / "history.json", history)
        for cb in callbacks:
            cb(step, record, model)
    bar.close()

    final = history[-1] if history else {"step": start}
    metrics = {k: v for k, v in final.items() if not (k == "lr" or k.startswith("lr/") or k == "grad_norm")}
    if env.is_main:
        write_json(out_dir / "history.json", history)
        write_json(out_dir / "metrics.json", metrics)
        save_checkpoint(out_dir / "model.pt", model.state_dict())
    dist_utils.barrier(env)  # nobody leaves (and tears the group down) before rank 0 has written
    return TrainResult(model=model, history=history, metrics=metrics, start_step=start)


@contextmanager
def run_dir(name: str) -> Iterator[Path]:
    """A scratch folder for one run's ``fit`` (checkpoints, history): removed when the run ends, except when
    training diverged: then it is moved to ``runs/failed/<name>/`` (relative to the working directory, the
    repository root for a stage) with the last good weights, and the error says where."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}_"))
    try:
        yield tmp
    except FloatingPointError as e:
        kept = Path("runs") / "failed" / name
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), kept)
        raise FloatingPointError(f"{e}; the run's folder is kept in {kept}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; the model's previous mode comes back even on an error.

    Autograd stays on: some evaluations need gradients (GradCAM); the others add ``torch.no_grad()``.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device``: tensors, mappings, (named) tuples, lists,
    dataclasses and objects with a ``.to(device)`` method; anything else is returned as is."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: move_to(getattr(batch, f.name), device) for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **changes)
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    return batch


def groups_by_prefix(model: nn.Module, lrs: Mapping[str, float]) -> list[dict[str, Any]]:
    """Param groups for ``fit``: a parameter whose name starts with a key of ``lrs`` (first match wins)
    trains at that lr, e.g. ``{"text_encoder.": 1e-5, "image_encoder.": 1e-5}``; the rest at ``cfg.lr``.
    Frozen parameters and empty groups are left out."""
    named: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in lrs}
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            named.get(next((pre for pre in lrs if name.startswith(pre)), ""), rest).append(p)
    groups = [{"params": ps, "lr": lrs[pre], "name": pre.rstrip(".")} for pre, ps in named.items() if ps]
    return groups + ([{"params": rest, "name": "rest"}] if rest else [])


def _groups(model: nn.Module, param_groups: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if param_groups is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    # Materialise generators: the optimizer and the clipping both iterate over the parameters.
    return [{**g, "params": list(g["params"])} for g in param_groups]


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type == "cpu":
        return torch.bfloat16 if cfg.cpu_precision == "bf16" else None
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _non_finite(terms: Mapping[str, Tensor | float]) -> list[str]:
    """The names of the loss terms that are NaN or infinite (checked every step, before the update)."""
    values = torch.stack([torch.as_tensor(v).detach().float().reshape(()).cpu() for v in terms.values()])
    finite = torch.isfinite(values)
    return [] if bool(finite.all()) else [k for k, ok in zip(terms, finite.tolist(), strict=True) if not ok]


def _reduce_terms(terms: Mapping[str, Tensor | float], env: DistEnv, device: torch.device) -> dict[str, float]:
    """The loss terms averaged over ranks (equal local batches, so this is the global-batch mean)."""
    if "loss" not in terms:
        raise KeyError(f"loss_fn must return a 'loss' entry, got {sorted(terms)}")
    keys = sorted(terms)  # same order on every rank for the single all-reduce
    values = torch.stack([torch.as_tensor(terms[k], device=device).detach().float().reshape(()) for k in keys])
    return dict(zip(keys, dist_utils.all_reduce_mean(values, env).tolist(), strict=True))


def _evaluate(evaluate: EvalFn, model: nn.Module, device: torch.device) -> dict[str, float]:
    with evaluating(model), preserved_rng_state(device):
        return {k: float(v) for k, v in evaluate(model).items()}


def _checkpoint_state(
    step: int,
    cfg: TrainConfig,
    env: DistEnv,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    sampler: StepBatchSampler,
    history: list[dict[str, float]],
    last_eval: dict[str, float],
    run_id: str,
) -> dict[str, Any]:
    rng = dist_utils.all_gather_object(get_rng_state(env.device), env)  # every rank's stream, in rank order
    return {
        "version": CHECKPOINT_VERSION,
        "run_id": run_id,
        "step": step,
        "config": cfg.model_dump(mode="json"),
        "sampler": sampler.state_dict(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "history": history,
        "eval": last_eval,
    }


def _resume(
    path: Path,
    cfg: TrainConfig,
    env: DistEnv,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    n: int,
    run_id: str,
) -> tuple[int, list[dict[str, float]], dict[str, float]] | None:
    """Load ``path`` into the training objects and return (step, history, last eval), or set it aside and
    return None when it belongs to a different run."""
    try:
        state = load_checkpoint(path)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:  # a truncated copy, not a checkpoint
        state, reason = None, f"cannot be read ({type(e).__name__}: {e})"
    else:
        reason = _incompatibility(state, cfg, model, optimizer, n, run_id)
    if reason is not None:
        if env.is_main:
            warnings.warn(f"{path} {reason}; starting from scratch (moved to {path.name}.incompatible)", stacklevel=4)
        dist_utils.barrier(env)  # every rank has looked at it before it is moved
        if env.is_main:
            path.replace(path.with_name(path.name + ".incompatible"))
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    if len(state["rng"]) == env.world_size:
        set_rng_state(state["rng"][env.rank], env.device)
    elif env.is_main:
        # Same data and LR, but dropout-like randomness cannot continue the old per-rank streams.
        warnings.warn(f"{path}: written by {len(state['rng'])} ranks, resuming on {env.world_size}", stacklevel=4)
    if env.is_main:
        print(f"resuming from {path} at step {state['step']}/{cfg.steps}", file=sys.stderr)
    return state["step"], state["history"], state["eval"]


def _incompatibility(
    state: dict[str, Any], cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, n: int, run_id: str
) -> str | None:
    """Why ``state`` cannot be continued under this config/model/data, or None if it can."""
    if state.get("version") != CHECKPOINT_VERSION:
        return f"has checkpoint version {state.get('version')}, expected {CHECKPOINT_VERSION}"
    if state["run_id"] != run_id:
        return f"belongs to run {state['run_id']!r}, this is {run_id!r}"
    ours = cfg.model_dump(mode="json")
    changed = [
        f"{k}: {saved!r} -> {ours[k]!r}" for k in TRAJECTORY_KEYS
        # a key added after the checkpoint was written had its default then
        if (saved := state["config"].get(k, TrainConfig.model_fields[k].default)) != ours[k]
    ]
    if changed:
        return "was written with other settings (" + ", ".join(changed) + ")"
    if state["sampler"]["n"] != n:
        return f"was written for a dataset of {state['sampler']['n']} samples, this one has {n}"
    if state["step"] > cfg.steps:
        return f"is at step {state['step']}, beyond steps={cfg.steps}"
    theirs = {k: tuple(v.shape) for k, v in state["model"].items()}
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if theirs != mine:
        diff = sorted(set(theirs.items()) ^ set(mine.items()))[:3]
        return f"holds a different model (first differences: {diff})"
    groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if groups != [len(g["params"]) for g in optimizer.param_groups]:
        return f"has optimizer groups of sizes {groups}, this run {[len(g['params']) for g in optimizer.param_groups]}"
    return None
