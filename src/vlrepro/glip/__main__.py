"""``python -m vlrepro.glip run --variant deep --seed 0``: the command of the ``glip@<variant>-<seed>`` stages.

A run writes

- ``reports/metrics/glip/<variant>-<seed>.json``: det/test AP (all, base, novel classes), its controls and
  flickr/test R@k (DVC metrics; the report's tables, claims ledger and gates read these);
- ``reports/runs/glip/<variant>-<seed>/run.json`` (detections on a few det/test images) and ``history.json``;
- ``runs/glip/<variant>-<seed>/model.safetensors``: the trained weights (teacher of the student, start of the
  transfer runs).

``python -m vlrepro.glip transfer --seed 0`` (stage ``glip_transfer@<seed>``) transfers that seed's
``transfer.start`` run to odinw (the world's, or one real ODinW dataset), k-shot, by full fine-tuning and by
prompt tuning (``vlrepro.glip.transfer``), and writes ``reports/metrics/glip/{fine_tuning,prompt_tuning}-<seed>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vlrepro.config import ConfigError, find_params_file, load_params
from vlrepro.glip.config import GLIPParams
from vlrepro.io import write_json, write_metrics

MODES = ("fine_tuning", "prompt_tuning")  # the transfer runs' variants (vlrepro.glip.transfer.MODES)

RUNS_DIR = Path("runs") / "glip"


def claims(p: GLIPParams) -> list[dict]:
    """The card's claims the section's variants can decide (see report.claims); ``fine_tuning`` and
    ``prompt_tuning`` are the transfer runs' two variants."""
    rows = []
    variants, shots = [*p.variants, *MODES], p.transfer.shots
    rich_prompts = "deep_gold" in p.variants and p.variant("deep_gold").eval.rich_prompts

    def add(claim: str, variant: str, reference: str, metric: str, margin: float = 0.0, **extra: str) -> None:
        if variant in variants and reference in variants:
            rows.append({"paper": "GLIP", "claim": claim, "metric": metric, "variant": variant,
                         "reference_variant": reference, "higher_is_better": True}
                        | ({"margin": margin} if margin else {}) | extra)  # fmt: skip

    add("deep fusion beats late fusion", "deep", "late", "det.all.AP")
    add("grounding data improves detection", "deep_gold", "deep", "det.all.AP")
    add("grounding data improves detection of novel concepts", "deep_gold", "deep", "det.novel.AP")
    add("the self-trained student beats its teacher", "student", "deep_gold", "det.all.AP")
    for k in shots:
        add(f"prompt tuning approaches full fine-tuning ({k}-shot, within 10 %)", "prompt_tuning", "fine_tuning",
            f"odinw.k{k}.AP", margin=0.1)
    if rich_prompts:  # one model scored with two prompts: the richer one against the class names
        add("richer prompts help novel classes", "deep_gold", "deep_gold", "det_rich.enriched.AP",
            reference_metric="det.enriched.AP")
    return rows


def gates(variant: str, bar: float = 0.6, times: float = 3.0) -> list[dict]:
    """A variant learned detection when its base-class AP50 on det/test reaches ``bar`` and ``times`` that of
    an untrained head of the same seed."""
    row = {"paper": "GLIP", "variant": variant, "metric": "det.base.AP50", "control": "untrained head",
           "control_metric": "det_untrained.base.AP50"}  # fmt: skip
    return [row | {"rule": "min", "margin": bar}, row | {"rule": "times", "margin": times}]


def transfer_gates(mode: str, shots: int, gain: float = 0.05) -> list[dict]:
    """A transfer learned the new domain when its k-shot odinw AP50 beats the model it started from
    (zero-shot) by ``gain``."""
    return [{"paper": "GLIP", "variant": mode, "metric": f"odinw.k{shots}.AP50",
             "control": "zero-shot, before transfer", "control_metric": "odinw.zero_shot.AP50", "rule": "plus",
             "margin": gain}]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from vlrepro.data.real.errors import DatasetError

    try:
        return _main(argv)
    except (DatasetError, NotImplementedError) as e:  # a real dataset missing or broken, or a path not built
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate one variant with one seed")
    run.add_argument("--variant", required=True)
    run.add_argument("--seed", type=int, required=True)
    transfer = sub.add_parser("transfer", help="k-shot odinw transfer of one seed's transfer.start run")
    transfer.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        params_file = find_params_file()
        p = load_params(params_file, sections=["glip"]).glip
        v = p.variant(args.variant if args.command == "run" else p.transfer.start)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    from vlrepro.glip.run import MODEL_FILE, save_model, train_and_evaluate

    torch.set_num_threads(1)  # as the SMCIM runs: two single-thread runs at once use both cores best
    root = params_file.parent
    if args.command == "transfer":
        return _transfer(p, args.seed, root)
    name = f"{args.variant}-{args.seed}"
    if p.source == "real" and "captions" in v.train.sets:
        return _not_run_on_real_data(p, args.variant, args.seed, root)
    teacher = root / RUNS_DIR / f"{v.pseudo.teacher}-{args.seed}" if "captions" in v.train.sets else None
    data, pretrained = root / "data" / p.source, root / "checkpoints" / "pretrain"  # data/world or data/real
    result = train_and_evaluate(p, args.variant, args.seed, data, pretrained, teacher)
    save_model(result.model, root / RUNS_DIR / name / MODEL_FILE)
    runs = root / "reports" / "runs" / "glip" / name
    write_json(runs / "run.json", {"examples": result.examples})
    write_json(runs / "history.json", result.history)
    result.metrics["seconds"] = result.seconds  # the run's wall time (the report's summary sums it)
    write_metrics(root / "reports" / "metrics" / "glip" / f"{name}.json", "glip", result.metrics,
                  variant=args.variant, seed=args.seed, claims=claims(p),
                  gates=gates(args.variant))  # fmt: skip
    det = result.metrics["det"]
    print(f"glip {name}: det/test AP50 base {det['base']['AP50']:.3f}, novel {det['novel']['AP50']:.3f}, "
          f"flickr R@1 {result.metrics['flickr']['R@1']:.3f} in {result.seconds:.0f} s")  # fmt: skip
    return 0


def _not_run_on_real_data(p: GLIPParams, variant: str, seed: int, root: Path) -> int:
    """The student's stage on real data: its outputs say why it did not train, so that ``dvc repro`` goes on to
    the report, where it has no gate and its claim is not testable."""
    from vlrepro.glip.run import NO_REAL_CAPTIONS as reason

    name = f"{variant}-{seed}"
    write_json(root / RUNS_DIR / name / "not_run.json", {"reason": reason})
    runs = root / "reports" / "runs" / "glip" / name
    write_json(runs / "run.json", {"examples": [], "not_run": reason})
    write_json(runs / "history.json", [])
    write_metrics(root / "reports" / "metrics" / "glip" / f"{name}.json", "glip", {}, variant=variant, seed=seed,
                  claims=claims(p))  # no gate: there is nothing it could be checked against
    print(f"glip {name}: not run on real data: {reason}", file=sys.stderr)
    return 0


def _transfer(p, seed: int, root: Path) -> int:
    from vlrepro.glip.run import load_run, loss_fn, open_split
    from vlrepro.glip.transfer import transfer_all

    start = p.transfer.start
    v = p.variant(start)
    if p.source == "real":  # one real ODinW dataset (data.real.odinw), its two splits' classes reconciled
        from vlrepro.glip.real import odinw_splits

        train, test = odinw_splits(p, root / "data" / "real")
    else:
        train, test = open_split(p, root / "data" / "world", "odinw", "train"), open_split(
            p, root / "data" / "world", "odinw", "test")
    model, tokenizer = load_run(p, start, root / RUNS_DIR / f"{start}-{seed}", root / "checkpoints" / "pretrain")
    t0 = time.perf_counter()
    out = transfer_all(model, tokenizer, p, train, test, seed, loss_fn(v), v.train.max_prompt_tokens)
    seconds = time.perf_counter() - t0
    for mode in MODES:
        metrics = {"odinw": {"zero_shot": out["zero_shot"], **{f"k{k}": out[f"k{k}"][mode] for k in p.transfer.shots}},
                   "seconds": seconds / len(MODES)}  # one process runs both modes: each file gets its share
        write_metrics(root / "reports" / "metrics" / "glip" / f"{mode}-{seed}.json", "glip", metrics, variant=mode,
                      seed=seed, claims=claims(p),
                      gates=[g for k in p.transfer.shots for g in transfer_gates(mode, k)])  # fmt: skip
        print(f"glip transfer {mode}-{seed}: odinw AP " + ", ".join(
            f"{k}-shot {out[f'k{k}'][mode]['AP']:.3f}" for k in p.transfer.shots) +
            f" (zero-shot {out['zero_shot']['AP']:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
