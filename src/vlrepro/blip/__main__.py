"""``python -m vlrepro.blip run --variant share_all_but_sa --seed 0``: the ``blip@...`` / ``blip_bootstrap@...`` stages.

A run writes ``reports/metrics/blip/<variant>-<seed>.json`` (retrieval R@1/5/10 both ways, ITM accuracy,
BLEU-4 / CIDEr and their controls on captions/test: the world's, or COCO Karpathy's with ``blip.source:
real``; parameter counts; DVC metrics, read by the report's tables, claims ledger and gates),
``reports/runs/blip/<variant>-<seed>/`` (``run.json``: captions of the first test images; ``history.json``:
the learning curve) and ``runs/blip/<variant>-<seed>/model.pt``.

``python -m vlrepro.blip capfilt --seed 0`` (stage ``blip_capfilt@<seed>``) fine-tunes the captioner and the
filter from that seed's no-CapFilt baseline run (``share_all_but_sa``) and writes the bootstrapped texts
(``reports/runs/blip/bootstrap-<seed>/texts.json``) and the filter's scores
(``reports/metrics/blip/bootstrap-<seed>.json``); the CapFilt variants' runs read them.
"""

from __future__ import annotations

import argparse
import sys
import time

from vlrepro.config import ConfigError, find_params_file, load_params
from vlrepro.io import write_json, write_metrics

BASELINE = "share_all_but_sa"  # BLIP's sharing, no CapFilt: the sharing ablation's choice and CapFilt's start
SHARING_NAMES = {"share_all": "all", "share_all_but_ca": "all except CA", "share_all_but_sa": "all except SA",
                 "share_none": "none"}  # fmt: skip
METRICS = (("captions.test.tr1", "TR@1"), ("captions.test.ir1", "IR@1"), ("captions.test.cider", "CIDEr"))


def claims(variants: list[str]) -> list[dict]:
    """The card's four claims, per metric, between the variants defined (see report.claims)."""
    rows = []

    def add(claim: str, variant: str, reference: str) -> None:
        if variant in variants and reference in variants:
            for metric, name in METRICS:
                rows.append({"paper": "BLIP", "claim": f"{claim} ({name})", "metric": metric, "variant": variant,
                             "reference_variant": reference, "higher_is_better": True})  # fmt: skip

    for other in ("share_all", "share_all_but_ca"):
        add(f"sharing all but SA beats sharing {SHARING_NAMES[other]}", BASELINE, other)
    add("sharing all but SA beats sharing nothing", BASELINE, "share_none")
    add("the filter helps", "filter", BASELINE)
    add("the captioner helps", "captioner", BASELINE)
    add("captioner + filter beat the filter alone", "capfilt", "filter")
    add("captioner + filter beat the captioner alone", "capfilt", "captioner")
    add("nucleus sampling beats beam search for bootstrapping", "capfilt", "capfilt_beam")
    add("a decoupled captioner and filter beat shared ones", "capfilt", "capfilt_shared")
    return rows


def gates(variant: str, itm_bar: float = 0.8, times_chance: float = 10.0) -> list[dict]:
    """A variant learned when ITM beats ``itm_bar`` (1:1, chance 0.5), both R@1 reach ``times_chance`` x
    chance, and its CIDEr beats writing the most frequent human caption for every image."""
    row = {"paper": "BLIP", "variant": variant}
    return [
        row | {"metric": "captions.test.itm_acc", "control": "chance (1:1 random negatives)",
               "control_metric": "captions.test.itm_chance", "rule": "min", "margin": itm_bar},
        row | {"metric": "captions.test.tr1", "control": "chance", "control_metric": "captions.test.tr1_chance",
               "rule": "times", "margin": times_chance},
        row | {"metric": "captions.test.ir1", "control": "chance", "control_metric": "captions.test.ir1_chance",
               "rule": "times", "margin": times_chance},
        row | {"metric": "captions.test.cider", "control": "the most frequent human caption",
               "control_metric": "captions.test.cider_frequent", "rule": "plus", "margin": 0.0},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from vlrepro.data.real.errors import DatasetError

    try:
        return _main(argv)
    except DatasetError as e:  # a real dataset's split or image missing or broken: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pre-train and evaluate one variant with one seed")
    run.add_argument("--variant", required=True)
    run.add_argument("--seed", type=int, required=True)
    cf = sub.add_parser("capfilt", help="fine-tune captioner and filter of one seed, bootstrap the web set")
    cf.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        params_file = find_params_file()
        section = load_params(params_file, sections=["blip"]).blip
        p = section.variant(args.variant) if args.command == "run" else section
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)  # as every matrix run: two single-thread runs at once use both cores best
    root = params_file.parent
    data, clip = root / "data" / p.source, root / "checkpoints" / "pretrain" / "clip"  # data/world or data/real
    if args.command == "capfilt":
        from vlrepro.blip.capfilt import bootstrap

        t0 = time.perf_counter()
        state = torch.load(root / "runs" / "blip" / f"{BASELINE}-{args.seed}" / "model.pt", weights_only=True)
        texts, metrics = bootstrap(p, args.seed, data, clip, state)
        metrics["seconds"] = time.perf_counter() - t0  # the run's wall time (the report's summary sums it)
        write_json(root / "reports" / "runs" / "blip" / f"bootstrap-{args.seed}" / "texts.json", texts)
        write_metrics(root / "reports" / "metrics" / "blip" / f"bootstrap-{args.seed}.json", "blip_capfilt",
                      metrics, variant="bootstrap", seed=args.seed)  # fmt: skip
        f = metrics["filter"]["decoupled"]
        known = (f", precision {f.get('precision', float('nan')):.3f} and recall {f.get('recall', float('nan')):.3f}"
                 " on the wrong ones") if texts["noisy"] is not None else ""  # only the world knows them
        print(f"blip bootstrap-{args.seed}: the filter keeps {f['kept']:.3f} of the web texts{known}")
        return 0

    from vlrepro.blip.run import train_and_evaluate
    from vlrepro.io import read_json

    name = f"{args.variant}-{args.seed}"
    capfilt = None
    if p.bootstrap.filter or p.bootstrap.captioner != "none":
        capfilt = read_json(root / "reports" / "runs" / "blip" / f"bootstrap-{args.seed}" / "texts.json")
    result = train_and_evaluate(p, args.seed, data, clip, capfilt)
    out = root / "runs" / "blip" / name
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.pt.tmp"
    torch.save(result.model.state_dict(), tmp)
    tmp.replace(out / "model.pt")
    runs = root / "reports" / "runs" / "blip" / name
    write_json(runs / "run.json", result.examples)
    write_json(runs / "history.json", result.history)
    result.metrics["seconds"] = result.seconds
    write_metrics(root / "reports" / "metrics" / "blip" / f"{name}.json", "blip", result.metrics,
                  variant=args.variant, seed=args.seed, claims=claims(list(section.variants)),
                  gates=gates(args.variant))  # fmt: skip
    t = result.metrics["captions"]["test"]
    print(f"blip {name}: TR@1 {t['tr1']:.3f}, IR@1 {t['ir1']:.3f}, ITM {t['itm_acc']:.3f}, CIDEr {t['cider']:.3f} "
          f"(frequent caption {t['cider_frequent']:.3f}) in {result.seconds:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
