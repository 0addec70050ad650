"""``python -m vlrepro.amc pretrain`` | ``python -m vlrepro.amc run --variant amc --seed 0``.

The commands of the ``amc_pretrain`` and ``amc@<variant>-<seed>`` DVC stages (no notebook: a papermill
kernel per run would cost more than the run). Paths are relative to the repository root:

- ``pretrain``: the ALBEF pre-training phase on captions, ``checkpoints/albef`` (``vlrepro.amc.pretrain``);
- ``run``: one variant × seed from that checkpoint, ``reports/metrics/amc/<variant>-<seed>.json`` and
  ``runs/amc/<variant>-<seed>/`` (``vlrepro.amc.run``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ALBEF_DIR = Path("checkpoints") / "albef"


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("pretrain", help="ALBEF pre-training on captions (checkpoints/albef)")
    run_ap = sub.add_parser("run", help="train and evaluate one variant with one seed")
    run_ap.add_argument("--variant", required=True, help="a name under amc.variants in params.yaml")
    run_ap.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)

    from vlrepro.config import ConfigError, find_params_file, load_params

    try:
        params_file = find_params_file()
        P = load_params(params_file, sections=["amc"])
        if args.command == "run":
            P.amc.variant(args.variant)  # type: ignore[attr-defined]
    except (ConfigError, KeyError) as e:
        print(f"error: {params_file if 'params_file' in locals() else 'params.yaml'}: {e}", file=sys.stderr)
        return 2
    if args.command == "run" and args.seed < 0:
        print(f"error: --seed {args.seed}: must be >= 0", file=sys.stderr)
        return 2
    import torch

    root = params_file.parent
    data = root / "data" / P.amc.source  # type: ignore[attr-defined]  # data/world or data/real
    if args.command == "pretrain":
        # Alone in the pipeline, unlike the runs: two intra-op threads use a 2-core machine, and a fixed count
        # keeps the checkpoint the same on a machine with more cores (reductions split by thread count).
        from vlrepro.amc.pretrain import pretrain_albef
        from vlrepro.stage import STAGE_THREADS

        torch.set_num_threads(STAGE_THREADS)

        m = pretrain_albef(P.amc, data, root / "checkpoints" / "pretrain", root / ALBEF_DIR, P.seed)  # type: ignore[attr-defined]
        itm, captions = m["val_itm_acc"], m["val_caption_itm_acc"]
        print(f"amc pretrain: {m['steps']} steps in {m['seconds']:.1f} s; flickr.val ITM accuracy, phrases "
              f"{itm['untrained']:.3f} -> {itm['pretrained']:.3f}, captions {captions['untrained']:.3f} -> "
              f"{captions['pretrained']:.3f}")
        return 0

    from vlrepro.amc.run import run

    # One intra-op thread: two runs at once use both cores (python -m vlrepro.matrix), and the numbers do not
    # depend on how the run was started.
    torch.set_num_threads(1)
    name = f"{args.variant}-{args.seed}"
    t_import = time.perf_counter()
    result = run(
        P.amc, args.variant, args.seed, data, root / ALBEF_DIR,  # type: ignore[attr-defined]
        metrics_path=root / "reports" / "metrics" / "amc" / f"{name}.json", run_dir=root / "runs" / "amc" / name,
    )
    t = result.timing
    point = {k: round(v["pointing"], 3) for k, v in result.metrics.get("refcoco+", {}).items()}
    flickr = result.metrics.get("flickr", {})
    test, val = flickr.get("test", {}), flickr.get("val", {})
    nan = float("nan")
    print(f"amc {name}: imports {t_import - t0:.1f} s, setup {t['setup_s']:.1f} s, train {t['train_s']:.1f} s "
          f"({t['steps']} steps), eval {t['eval_s']:.1f} s; flickr.test pointing {test.get('pointing', nan):.3f} "
          f"(other phrase {test.get('pointing_other_phrase', nan):.3f}, "
          f"centre {test.get('pointing_centre', nan):.3f}), "
          f"flickr.val ITM accuracy captions {val.get('caption_itm_acc', nan):.3f}, phrases "
          f"{val.get('itm_acc', nan):.3f}; refcoco+ {point}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
