"""An estimate of the `paper` profile's GPU time per stage, from FLOP counts (nothing here has run on a GPU).

    .venv/bin/python benchmarks/estimate_gpu.py                      # A100 and H100 at 35 % of their bf16 peak
    .venv/bin/python benchmarks/estimate_gpu.py --utilisation 0.5

What it counts. ``torch.utils.flop_counter`` counts, on this CPU, one sample through each encoder the paper profile
builds — the pretrain stage's ResNet-50 and ViT-B/16 and the bundled MiniLM — at the input sizes the paper profile
gives them: a forward pass for a frozen encoder, forward and backward for a trained one. Each stage's cost per
training sample is a sum of those passes, written out in ``stages`` (which encoders, trained or frozen, how many
passes), times the samples it trains on (steps × batch from params.yaml's paper profile, runs from dvc.yaml's
matrices), plus what it encodes once per run (BLIP's image bank). The papers' own heads (CA2M, the fusion and box
heads, ALA's side branch, BLIP's cross-attention) are left out: the estimate is a lower bound, close where the
encoders dominate (SMCIM, GLIP, ALA) and loose for BLIP. Evaluation is left out too.

GPU time = FLOPs / (peak bf16 dense FLOP/s × utilisation). The peaks are the vendors' dense bf16 figures (A100 312
TFLOP/s, H100 SXM 989 TFLOP/s); the utilisation (default 35 %) is an assumption, not a measurement: the FLOPs are a
lower bound, the hours only as good as that guess. The CPU column is the same FLOPs at the fp32 matmul rate measured
here, for scale.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from vlrepro.config import validate_params

GPUS = {"A100": 312e12, "H100": 989e12}


@dataclass(frozen=True)
class Pass:
    encoder: str  # resnet50 | vit_b | minilm
    size: int  # image side (px) or text length (tokens)
    trained: bool
    times: float = 1.0  # passes per sample (ALBEF's momentum copy, ITM's negatives, ...)


def encoder(name: str, size: int) -> tuple[torch.nn.Module, torch.Tensor | tuple]:
    from vlrepro.models.backbones import CNNBackbone, CNNConfig, ViTBackbone, ViTConfig
    from vlrepro.models.text import load_minilm

    if name == "resnet50":
        return CNNBackbone(CNNConfig(arch="resnet50", channels=None)), torch.rand(1, 3, size, size)
    if name == "vit_b":
        cfg = ViTConfig(arch="vit_base_patch16_224", img_size=size, patch_size=None, embed_dim=None, depth=None,
                        num_heads=None, mlp_ratio=None)  # fmt: skip
        return ViTBackbone(cfg), torch.rand(1, 3, size, size)
    model = load_minilm(max_len=size)
    return model, (torch.randint(1000, 2000, (1, size)), torch.ones(1, size, dtype=torch.long))


def count(name: str, size: int, trained: bool) -> tuple[float, float]:
    """FLOPs of one sample (forward, or forward + backward) and the CPU seconds it took."""
    model, x = encoder(name, size)
    model.train(trained)
    for q in model.parameters():
        q.requires_grad_(trained)
    args = x if isinstance(x, tuple) else (x,)
    with FlopCounterMode(display=False) as counter:
        t0 = time.perf_counter()
        out = model(*args)
        out = out if isinstance(out, torch.Tensor) else (out[-1] if isinstance(out, (list, tuple)) else out)
        if trained:
            (out.float().mean() if isinstance(out, torch.Tensor) else out.last_hidden_state.mean()).backward()
        seconds = time.perf_counter() - t0
    return float(counter.get_total_flops()), seconds


def runs_of(dvc_yaml: Path) -> dict[str, int]:
    """Runs per matrix stage of ``dvc_yaml`` (variants × seeds)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: len(s["matrix"].get("variant", [None])) * len(s["matrix"]["seed"])
            for name, s in stages.items() if "matrix" in s}  # fmt: skip


def stages(P, runs: dict[str, int]) -> list[tuple[str, int, int, list[Pass], int]]:  # noqa: ANN001
    """(stage, runs, training samples per run, passes per sample, frozen encodings per run), paper profile."""
    pre, amc, smcim, glip, ala, blip = P.pretrain, P.amc, P.smcim, P.glip, P.ala, P.blip
    world = P.data.world.image_size
    albef = [Pass("vit_b", world, True), Pass("vit_b", world, False),  # the model and its momentum copy
             Pass("minilm", amc.max_len, True, 5),  # ITC text, ITM positive + 2 negatives, MLM
             Pass("minilm", amc.max_len, False, 2)]  # fmt: skip
    glip_passes = [Pass("resnet50", glip.real.image_size, True), Pass("minilm", glip.train.max_prompt_tokens, False)]
    med = [Pass("minilm", 40, True, 3), Pass("minilm", 40, False, 1)]  # ITC/ITM encoder passes and the LM decoder
    return [
        ("pretrain: cnn", 1, pre.cnn.steps * pre.cnn.batch_size, [Pass("resnet50", world, True)], 0),
        ("pretrain: vit", 1, pre.vit.steps * pre.vit.batch_size, [Pass("vit_b", world, True)], 0),
        ("pretrain: clip", 1, pre.clip.steps * pre.clip.batch_size,
         [Pass("vit_b", world, True), Pass("minilm", 40, True)], 0),
        ("pretrain: downstream", 2, pre.downstream.steps * pre.downstream.batch_size,
         [Pass("resnet50", world, True), Pass("minilm", 40, True)], 0),
        ("amc_pretrain", 1, amc.pretrain.steps * amc.pretrain.batch_size, albef, 0),
        ("amc", runs["amc"], amc.steps * amc.batch_size, [*albef, Pass("minilm", amc.max_len, True)], 0),  # + GradCAM
        ("smcim", runs["smcim"], smcim.train.steps * smcim.train.batch_size,
         [Pass("resnet50", smcim.image_size, True), Pass("minilm", smcim.max_len, True)], 0),
        ("glip", runs["glip"], glip.train.steps * glip.train.batch_size, glip_passes, 0),
        ("glip_transfer (both modes)", runs["glip_transfer"],
         2 * len(glip.transfer.shots) * glip.transfer.steps * glip.transfer.batch_size, glip_passes, 0),
        ("ala + ala_baselines", runs["ala"] + runs["ala_baselines"], ala.train.steps * ala.train.batch_size,
         [Pass("vit_b", 224, False)], 0),
        ("blip + blip_bootstrap", runs["blip"] + runs["blip_bootstrap"], blip.train.steps * blip.train.batch_size,
         med, 113_287),  # COCO Karpathy train + restval images per bank
        ("blip_capfilt (2 fine-tunes)", runs["blip_capfilt"],
         2 * blip.capfilt.steps * (blip.capfilt.batch_size or blip.train.batch_size), med, 113_287),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--utilisation", type=float, default=0.35, help="share of the GPU's bf16 peak sustained")
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()  # MiniLM's unused pooler weights are reported at every load
    raw = yaml.safe_load(Path(args.params).read_text())
    P = validate_params({**raw, "profile": "paper"}, sections=["data", "pretrain", "amc", "smcim", "glip", "ala",
                                                               "blip"])  # fmt: skip
    torch.manual_seed(0)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    cpu_rate = 5 * 2 * 2048**3 / (time.perf_counter() - t0)
    cache: dict[tuple, tuple[float, float]] = {}

    def cost(p: Pass) -> float:
        key = (p.encoder, p.size, p.trained)
        if key not in cache:
            cache[key] = count(*key)
            flops, seconds = cache[key]
            mode = "fwd+bwd" if p.trained else "fwd"
            print(f"  {p.encoder:8} {p.size:>4} {mode:7} {flops / 1e9:8.1f} GFLOP per sample ({seconds:.2f} s here)")
        return cache[key][0] * p.times

    print(f"counting one sample per encoder (CPU fp32 matmul: {cpu_rate / 1e9:.0f} GFLOP/s) ...")
    rows = []
    for name, runs, samples, passes, encodings in stages(P, runs_of(Path(args.params).with_name("dvc.yaml"))):
        per_sample = sum(cost(p) for p in passes)
        once = encodings * cost(Pass("vit_b", 224, False)) if encodings else 0.0
        rows.append((name, runs, samples, per_sample, runs * (samples * per_sample + once)))
    head = f"{'stage':28} {'runs':>4} {'samples/run':>12} {'GFLOP/sample':>12} {'PFLOP':>9}"
    gpus = "".join(f" {g + ' h':>9}" for g in GPUS)
    print(f"\n{head}{gpus} {'CPU h':>9}   (GPU hours at {args.utilisation:.0%} of the bf16 peak)")
    for name, runs, samples, per_sample, total in rows:
        hours = "".join(f" {total / (peak * args.utilisation) / 3600:>9.1f}" for peak in GPUS.values())
        print(f"{name:28} {runs:>4} {samples:>12,} {per_sample / 1e9:>12.1f} {total / 1e15:>9.1f}{hours} "
              f"{total / cpu_rate / 3600:>9.0f}")  # fmt: skip
    total = sum(r[-1] for r in rows)
    hours = "".join(f" {total / (peak * args.utilisation) / 3600:>9.1f}" for peak in GPUS.values())
    print(f"{'all':28} {'':>4} {'':>12} {'':>12} {total / 1e15:>9.1f}{hours} {total / cpu_rate / 3600:>9.0f}")


if __name__ == "__main__":
    main()
