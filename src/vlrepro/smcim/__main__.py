"""``python -m vlrepro.smcim features`` | ``python -m vlrepro.smcim run --variant full --seed 0``.

The commands of the ``smcim_features`` and ``smcim@<variant>-<seed>`` DVC stages. A papermill kernel per
matrix run would cost seconds each, so the runs are plain processes; the ``smcim_report`` notebook reads
what they write:

- ``reports/metrics/smcim/<variant>-<seed>.json``: Acc@0.5 per set and split (DVC metrics; the report's tables
  and claims ledger read these);
- ``reports/runs/smcim/<variant>-<seed>/run.json`` (val predictions, final σ) and ``history.json`` (training curve).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlrepro.config import ConfigError, find_params_file, load_params
from vlrepro.io import write_json, write_metrics

FEATURES_DIR = Path("data") / "smcim_features"


def claims(variants: list[str]) -> list[dict]:
    """The card's claims this variant set can decide, each against the full model (see report.claims)."""
    rows = []

    def add(claim: str, variant: str, reference: str, metric: str = "refcoco.val.acc@0.5") -> None:
        if variant in variants and reference in variants:
            rows.append({"paper": "SMCIM", "claim": claim, "metric": metric, "variant": variant,
                         "reference_variant": reference, "higher_is_better": True})  # fmt: skip

    add("three feature levels beat one", "full", "levels_1")
    add("three feature levels beat two", "full", "levels_2")
    add("the deeper CA2M stacks beat one block per stage", "full", "shallow")
    add("self-paced weighting beats plain L1 + GIoU", "full", "no_self_paced")
    add("CA2M fusion beats a transformer encoder (TransVG-style)", "full", "transformer")
    add("λ = 0.75 beats λ = 0.25", "full", "lambda_0.25")
    add("σ0 = σ1 = 2.5 beats σ = 1", "full", "sigma_1")
    return rows


def gates(variants: list[str], eval_set: str = "refcoco") -> list[dict]:
    """Each variant's learning gate: val Acc@0.5 at least twice that of a random scene object's exact box
    (computed by the run on the same expressions). A claim between variants that fail it is not testable."""
    return [
        {"paper": "SMCIM", "variant": v, "metric": f"{eval_set}.val.acc@0.5", "control": "random scene object's box",
         "control_metric": f"{eval_set}.val.random_object_acc@0.5", "rule": "times", "margin": 2.0}
        for v in variants
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("features", help="encode every train/eval split with the frozen encoders")
    run = sub.add_parser("run", help="train and evaluate one variant with one seed")
    run.add_argument("--variant", required=True)
    run.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        params_file = find_params_file()
        P = load_params(params_file, sections=["smcim"])
        p = P.smcim
        if args.command == "run":
            p.variant(args.variant)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = params_file.parent
    from vlrepro.data.real.errors import DatasetError

    # data/world, or with source real the refer splits the `data` stage converted (vlrepro.smcim.real)
    data, pretrained = root / "data" / p.source, root / "checkpoints" / "pretrain"
    if args.command == "features":
        import torch

        from vlrepro.smcim.features import extract_all
        from vlrepro.stage import STAGE_THREADS

        torch.set_num_threads(STAGE_THREADS)  # as a notebook stage: the cached features do not depend on the core count

        try:
            seconds = extract_all(p, data, pretrained, root / FEATURES_DIR, P.seed)
        except DatasetError as e:  # a real split or image missing or broken: say which, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"smcim features: {sum(seconds.values()):.1f} s")
        return 0
    import torch

    from vlrepro.smcim.run import train_and_evaluate

    # One intra-op thread: the step's matrices are too small for two to pay, two runs at once use both
    # cores (python -m vlrepro.matrix), and the numbers do not depend on how the run was started.
    torch.set_num_threads(1)

    name = f"{args.variant}-{args.seed}"
    try:
        result = train_and_evaluate(p, args.variant, args.seed, root / FEATURES_DIR, data, pretrained)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = root / "reports" / "runs" / "smcim" / name
    write_json(runs / "run.json", {"examples": result.examples, "sigma": result.sigma})
    write_json(runs / "history.json", result.history)
    result.metrics["seconds"] = result.seconds  # the run's wall time (the report's summary sums it)
    write_metrics(root / "reports" / "metrics" / "smcim" / f"{name}.json", "smcim", result.metrics,
                  variant=args.variant, seed=args.seed, claims=claims(list(p.variants)),
                  gates=gates([args.variant], p.variant(args.variant).eval_sets[0]))  # fmt: skip
    val = result.metrics[p.variant(args.variant).eval_sets[0]]["val"]["acc@0.5"]
    print(f"smcim {name}: val Acc@0.5 {val:.3f} in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
