"""SMCIM figures that are not pipeline metrics: cost per expression and accuracy against training length.

    .venv/bin/python benchmarks/bench_smcim.py                      # cost table (default-profile sizes)
    .venv/bin/python benchmarks/bench_smcim.py --steps 300 3000     # + full SMCIM trained that long, seed 0

Needs the `smcim_features` stage's output (`dvc repro smcim_features`). Prints the feature cache's bytes per
expression, params, GFLOPs and the median batch-1 latency of SMCIM and the TransVG-style baseline (encoders
included), then for each ``--steps`` the refcoco val Acc@0.5 and wall time of a full-SMCIM run (other
settings from params.yaml).
"""

from __future__ import annotations

import argparse
import json

import torch

from vlrepro.config import find_params_file, load_params
from vlrepro.data.records import load_split
from vlrepro.models import load_pretrained
from vlrepro.models.backbones import images_to_tensor
from vlrepro.smcim.__main__ import FEATURES_DIR
from vlrepro.smcim.efficiency import measure
from vlrepro.smcim.features import load_features, load_text_encoder
from vlrepro.smcim.model import build
from vlrepro.smcim.online import EndToEnd
from vlrepro.smcim.run import cached_config, train_and_evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="*", default=[], help="train full SMCIM for these step counts")
    args = ap.parse_args()
    params_file = find_params_file()
    root, P = params_file.parent, load_params(params_file, sections=["smcim"])
    p = P.smcim
    torch.manual_seed(0)
    cnn = load_pretrained(root / "checkpoints" / "pretrain" / "cnn").eval()
    text = load_text_encoder(p, root / "checkpoints" / "pretrain").eval()
    probe = load_features(root / FEATURES_DIR / p.eval_sets[0] / "val.safetensors")
    image = images_to_tensor(load_split(root / "data" / "world" / p.eval_sets[0] / "val").images[:1])
    for path in sorted((root / FEATURES_DIR).glob("*/*.safetensors")):
        n = len(json.loads(path.with_suffix(".json").read_text())["texts"])
        print(f"feature cache {path.parent.name}/{path.stem}: {path.stat().st_size / n / 1024:.1f} KiB per expression "
              f"({n} expressions, all cached views and text states included)")
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'model':12} {'params':>11} {'fusion':>9} {'GFLOPs':>8} {'fusion':>8} {'ms/expr':>8}")
    for name, variant in (("SMCIM", "full"), ("TransVG", "transformer")):
        v = p.variant(variant)
        model = EndToEnd(cnn, text, build(cached_config(v, probe)), p.text_blocks, v.model.grid_stride)
        c = measure(model, image, probe.texts[0])
        gflops = f"{c.gflops_total:>8.3f} {c.gflops_fusion:>8.4f}"
        print(f"{name:12} {c.params_total:>11,} {c.params_fusion:>9,} {gflops} {c.latency_ms:>8.1f}")
    for steps in args.steps:
        run_p = p.model_copy(update={"train": p.train.model_copy(update={"steps": steps})})
        r = train_and_evaluate(run_p, "full", 0, root / FEATURES_DIR)
        print(f"full SMCIM, {steps} steps: refcoco val Acc@0.5 {r.metrics['refcoco']['val']['acc@0.5']:.3f} "
              f"({r.seconds:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
