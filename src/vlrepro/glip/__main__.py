"""``python -m vlrepro.glip run --variant deep --seed 0``: the command of the ``glip@<variant>-<seed>`` stages.

A run writes

- ``reports/metrics/glip/<variant>-<seed>.json``: det/test AP (all, base, novel classes), its controls and
  flickr/test R@k (DVC metrics; the report's tables, claims ledger and gates read these);
- ``reports/runs/glip/<variant>-<seed>/run.json`` (detections on a few det/test images) and ``history.json``;
- ``runs/glip/<variant>-<seed>/head.safetensors``: the trained head, the teacher of the student variant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlrepro.config import ConfigError, find_params_file, load_params
from vlrepro.io import write_json, write_metrics

RUNS_DIR = Path("runs") / "glip"


def claims(variants: list[str]) -> list[dict]:
    """The card's claims this variant set can decide (see report.claims)."""
    rows = []

    def add(claim: str, variant: str, reference: str, metric: str) -> None:
        if variant in variants and reference in variants:
            rows.append({"paper": "GLIP", "claim": claim, "metric": metric, "variant": variant,
                         "reference_variant": reference, "higher_is_better": True})  # fmt: skip

    add("deep fusion beats late fusion", "deep", "late", "det.all.AP")
    add("grounding data improves detection", "deep_gold", "deep", "det.all.AP")
    add("grounding data improves detection of novel concepts", "deep_gold", "deep", "det.novel.AP")
    add("the self-trained student beats its teacher", "student", "deep_gold", "det.all.AP")
    return rows


def gates(variant: str, bar: float = 0.6, times: float = 3.0) -> list[dict]:
    """A variant learned detection when its base-class AP50 on det/test reaches ``bar`` and ``times`` that of
    an untrained head of the same seed."""
    row = {"paper": "GLIP", "variant": variant, "metric": "det.base.AP50", "control": "untrained head",
           "control_metric": "det_untrained.base.AP50"}  # fmt: skip
    return [row | {"rule": "min", "margin": bar}, row | {"rule": "times", "margin": times}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate one variant with one seed")
    run.add_argument("--variant", required=True)
    run.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        params_file = find_params_file()
        p = load_params(params_file, sections=["glip"]).glip
        v = p.variant(args.variant)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    from vlrepro.glip.run import HEAD_FILE, save_head, train_and_evaluate

    torch.set_num_threads(1)  # as the SMCIM runs: two single-thread runs at once use both cores best
    root = params_file.parent
    name = f"{args.variant}-{args.seed}"
    teacher = root / RUNS_DIR / f"{v.pseudo.teacher}-{args.seed}" if "captions" in v.train.sets else None
    data, pretrained = root / "data" / "world", root / "checkpoints" / "pretrain"
    result = train_and_evaluate(p, args.variant, args.seed, data, pretrained, teacher)
    save_head(result.model, root / RUNS_DIR / name / HEAD_FILE)
    runs = root / "reports" / "runs" / "glip" / name
    write_json(runs / "run.json", {"examples": result.examples})
    write_json(runs / "history.json", result.history)
    write_metrics(root / "reports" / "metrics" / "glip" / f"{name}.json", "glip", result.metrics,
                  variant=args.variant, seed=args.seed, claims=claims(list(p.variants)),
                  gates=gates(args.variant))  # fmt: skip
    det = result.metrics["det"]
    print(f"glip {name}: det/test AP50 base {det['base']['AP50']:.3f}, novel {det['novel']['AP50']:.3f}, "
          f"flickr R@1 {result.metrics['flickr']['R@1']:.3f} in {result.seconds:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
