"""``python -m vlrepro.ala run --variant full --seed 0``: the command of the ``ala@<variant>-<seed>`` stages.

A run writes ``reports/metrics/ala/<variant>-<seed>.json`` (accuracy, mIoU under both binarisation rules and
its two controls, Insertion, Deletion, ID on cub/test; DVC metrics, read by the report's tables, claims
ledger and gates) and ``reports/runs/ala/<variant>-<seed>/`` (``run.json``: maps of the first test images and
the mean insertion/deletion curves; ``history.json``: the learning curve).

``python -m vlrepro.ala baselines --seed 0`` (stage ``ala_baselines@<seed>``) trains the plain classifier and
writes the same files for each post-hoc method of ``ala.baselines`` (``gradcam-<seed>.json``, ...).
"""

from __future__ import annotations

import argparse
import sys

from vlrepro.config import ConfigError, find_params_file, load_params
from vlrepro.io import write_json, write_metrics


def claims(variants: list[str], baselines: tuple[str, ...]) -> list[dict]:
    """The card's claims that these variants and baselines can decide (see report.claims)."""
    methods = [*variants, *baselines]
    rows = []

    def add(claim: str, variant: str, reference: str, metric: str, higher_is_better: bool = True) -> None:
        if variant in methods and reference in methods:
            rows.append({"paper": "ALA", "claim": claim, "metric": metric, "variant": variant,
                         "reference_variant": reference, "higher_is_better": higher_is_better})  # fmt: skip

    names = {"rise": "RISE", "gradcam": "Grad-CAM", "rollout": "attention rollout"}
    for b in baselines:
        add(f"ALA beats {names[b]} on mIoU", "full", b, "cub.test.miou")
        add(f"ALA beats {names[b]} on the ID score", "full", b, "cub.test.id")
    for ablated, what in (("aea_only", "AEA alone"), ("sbn_only", "SBN alone")):
        add(f"AEA + SBN beats {what} on mIoU", "full", ablated, "cub.test.miou")
        add(f"AEA + SBN beats {what} on the ID score", "full", ablated, "cub.test.id")
    add("the SBN contributes more than the AEA (mIoU)", "sbn_only", "aea_only", "cub.test.miou")
    return rows


def gates(variant: str, bar: float = 0.8) -> list[dict]:
    """A method's explanations are compared only if the classifier it explains reaches ``bar`` test accuracy."""
    return [{"paper": "ALA", "variant": variant, "metric": "cub.test.accuracy", "control": "chance",
             "control_metric": "cub.test.chance", "rule": "min", "margin": bar}]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate one ALA variant with one seed")
    run.add_argument("--variant", required=True)
    run.add_argument("--seed", type=int, required=True)
    base = sub.add_parser("baselines", help="train the plain classifier of one seed and score the post-hoc methods")
    base.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        params_file = find_params_file()
        P = load_params(params_file, sections=["ala"])
        p = P.ala
        if args.command == "run":
            p.variant(args.variant)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    from vlrepro.ala.run import baselines, train_and_evaluate
    from vlrepro.data.real.errors import DatasetError

    torch.set_num_threads(1)  # as every matrix run: two single-thread runs at once use both cores best
    root = params_file.parent
    data, clip = root / "data" / p.source, root / "checkpoints" / "pretrain" / "clip"
    try:
        if args.command == "run":
            result = train_and_evaluate(p, args.variant, args.seed, data, clip)
        else:
            result = baselines(p, args.seed, data, clip)
    except DatasetError as e:  # a real dataset's path not set or not as expected: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    for method, metrics in result.metrics.items():
        name = f"{method}-{args.seed}"
        # the run's wall time (the report's summary sums it); a baselines run explains with several methods
        metrics["seconds"] = result.seconds / len(result.metrics)
        runs = root / "reports" / "runs" / "ala" / name
        write_json(runs / "run.json", result.examples[method])
        write_json(runs / "history.json", result.history)
        test = metrics["cub"]["test"]
        write_metrics(root / "reports" / "metrics" / "ala" / f"{name}.json", "ala", metrics, variant=method,
                      seed=args.seed, claims=claims(list(p.variants), p.baselines),
                      gates=gates(method))  # fmt: skip
        print(f"ala {name}: accuracy {test['accuracy']:.3f}, mIoU {test['miou']:.3f} (blob {test['miou_blob']:.3f}), "
              f"ID {test['id']:.3f} in {result.seconds:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
