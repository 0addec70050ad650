"""Training-step throughput of the pipeline's models against this machine's matmul peak.

    .venv/bin/python benchmarks/bench_train.py                          # every model, 1 and 2 threads, fp32/bf16
    .venv/bin/python benchmarks/bench_train.py --models smcim --compile # + torch.compile (slow to start)

For each model's training step (forward, backward, AdamW) at the default profile's batch and sizes it prints
samples/s, the achieved GFLOP/s (FLOPs of one step counted by ``torch.utils.flop_counter``) and that rate as
a share of the machine's matmul peak at the same precision and thread count, measured in the same run (a
2048² fp32 and a bf16 matmul). Models: the pretrain stage's ``text`` (MLM on world texts), ``cnn`` and ``vit``
(attribute pre-training on world scenes) and ``clip`` (the dual encoder on world captions); ``smcim`` and
``transformer`` (TransVG-style) on inputs shaped like the cached features; ``albef`` (AMC's model, one AMC
training batch), ``glip`` (GLIP-T(B), one detection batch), ``ala`` (the full ALA on the frozen CLIP, its maps
cached as in the runs) and ``blip`` (BLIP's MED, ITC + ITM + LM on a batch of human captions, the frozen ViT's
tokens cached as in the runs); all but ``cnn``, ``vit``, ``smcim`` and ``transformer`` need
``checkpoints/pretrain``. SMCIM's and ALA's inputs are random, the others' are world batches: throughput does
not depend on the values, only on their shapes (such as text lengths). Machines are noisy: compare figures
from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlrepro.config import find_params_file, load_params

Step = Callable[[], torch.Tensor]  # one forward pass returning the loss


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of an n×n matmul at the current thread count, repeated for about ``seconds``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t0 = time.perf_counter()
    a @ b
    if (first := time.perf_counter() - t0) > seconds:  # bf16 on a CPU without bf16 instructions: about 30 s
        return 2 * n**3 / first / 1e9
    repeats, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        repeats += 1
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def smcim_step(variant: str, batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.smcim.model import build
    from vlrepro.smcim.run import model_config

    P = load_params(find_params_file())
    p = P.smcim.variant(variant)
    size = P.data.world.image_size
    model = build(model_config(p, (64, 128, 256), 384, size))  # resnet10t's last 3 stages, MiniLM's width
    maps = [torch.randn(batch, c, size // s, size // s) for c, s in ((64, 8), (128, 16), (256, 32))]
    words, mask = torch.randn(batch, p.text_blocks, 14, 384), torch.ones(batch, 14, dtype=torch.long)
    target = torch.rand(batch) * model.config.grid[0] * model.config.grid[1]

    def step() -> torch.Tensor:
        out = model(maps, words, mask)
        return out.boxes.sum() + torch.nn.functional.cross_entropy(out.cell_logits.float(), target.long())

    return model, step


def text_step(batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.models import load_pretrained
    from vlrepro.pretrain import mlm
    from vlrepro.pretrain.data import train_texts

    p = load_params(find_params_file(), sections=["pretrain"]).pretrain.text
    text = load_pretrained(Path("checkpoints/pretrain/text"))  # the pretrain stage's world BERT and tokenizer
    model = mlm.MaskedLM(text)
    data = mlm.MaskedTexts(train_texts(Path("data/world"))[: 4 * batch], text.tokenizer, p.max_len, p.mask_prob)
    b = data.collate([data[i] for i in range(batch)])
    return model, lambda: mlm.mlm_loss(model, b)["loss"]


def backbone_step(kind: str, batch: int) -> tuple[torch.nn.Module, Step]:
    """The pretrain stage's attribute pre-training of the CNN or the ViT, one batch of world scenes."""
    from torch.utils.data import default_collate

    from vlrepro.pretrain import attributes
    from vlrepro.pretrain.data import load_scene_images
    from vlrepro.pretrain.run import build_backbone

    p = load_params(find_params_file(), sections=["pretrain"]).pretrain
    images = load_scene_images(Path("data/world"), p.image_sets, "train", limit=batch)
    space = attributes.AttributeSpace.from_meta(images.meta, p.hold_out_novel)
    data = attributes.AttributeImages(images, space, p.grid_stride)
    model = attributes.AttributeModel(build_backbone(kind, p, images.image_size), space, p.grid_stride)
    b = default_collate([data[i] for i in range(batch)])
    classes, mask = space.classes_per_group, space.label_mask()
    return model, lambda: attributes.attribute_loss(model, b, classes, mask)["loss"]


def clip_step(batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.models import load_pretrained
    from vlrepro.pretrain import contrastive

    p = load_params(find_params_file(), sections=["pretrain"]).pretrain.clip
    model = load_pretrained(Path("checkpoints/pretrain/clip"))
    splits = contrastive.load_caption_splits(Path("data/world"), p.sets)
    data = contrastive.CaptionPairs(splits, model.text.tokenizer, model.config.text.max_len, p.hard_negatives)
    b = data.collate([data[i] for i in range(batch)])  # world captions: the stage's text lengths
    return model, lambda: contrastive.clip_loss(model, b)["loss"]


def albef_step(batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.amc.data import RegionPairs, world_split_dir
    from vlrepro.amc.pretrain import build_from_clip
    from vlrepro.amc.train import albef_amc_loss
    from vlrepro.data.records import load_split

    P = load_params(find_params_file())
    p = P.amc
    model = build_from_clip(p, Path("checkpoints/pretrain"), 0)  # the runs' architecture and trainable blocks
    data = RegionPairs(load_split(world_split_dir(Path("data/world"), p.train_set, "train")), model.text.tokenizer,
                       p.max_len, p.augment, p.mlm_prob, 1.0, box_seed=0)  # fmt: skip
    b = data.collate([data[i] for i in range(batch)])
    variant = p.variant("amc")
    return model, lambda: albef_amc_loss(model, b, variant)["loss"]


def glip_step(variant: str, batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.data.records import load_split
    from vlrepro.glip.data import GroundingSamples
    from vlrepro.glip.run import build_model, loss_fn

    p = load_params(find_params_file()).glip
    v = p.variant(variant)
    model, tokenizer = build_model(v, Path("checkpoints/pretrain"))  # CNN fine-tuned as in the runs (train.cnn_lr)
    data = GroundingSamples([load_split(Path("data/world") / s / "train") for s in v.train.sets if s != "captions"],
                            tokenizer, v.train.max_prompt_tokens, v.train.detection_share)  # fmt: skip
    b = data.collate([data[i] for i in range(batch)])
    loss = loss_fn(v)
    return model, lambda: loss(model, b)["loss"]


def ala_step(batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.ala.model import ala_loss
    from vlrepro.ala.run import build_model
    from vlrepro.models import load_pretrained

    p = load_params(find_params_file(), sections=["ala"]).ala
    model = build_model(p, load_pretrained(Path("checkpoints/pretrain/clip")).visual, num_classes=16)
    images, labels = torch.rand(batch, 3, 64, 64), torch.randint(0, 16, (batch,))
    maps = model.clip_maps(images)  # the runs compute the frozen CLIP's maps once (ala.train.cache_clip)
    return model, lambda: ala_loss(model(images, maps), labels, p.train.ab_weight)["loss"]


def blip_step(batch: int) -> tuple[torch.nn.Module, Step]:
    from vlrepro.blip.data import PairBatches, encode_split, human_pairs, training_images
    from vlrepro.blip.model import blip_losses
    from vlrepro.blip.run import build_model, load_clip
    from vlrepro.models.text import encode

    p = load_params(find_params_file(), sections=["blip"]).blip
    clip, tokenizer = load_clip(Path("checkpoints/pretrain/clip"))
    data = training_images(p, Path("data/world"))
    pairs = human_pairs(data)
    bank = encode_split(clip.visual, data.human, max(pairs.image[:batch]) + 1)
    b = PairBatches(pairs, bank, lambda t, n: encode(tokenizer, t, n), clip.config.text.max_len,
                    data.truth).collate(list(range(batch)))  # fmt: skip
    model = build_model(p, clip)
    return model, lambda: blip_losses(model, b, p.model.alpha, p.train.itm_negatives == "hard")["loss"]


def measure(model: torch.nn.Module, step: Step, batch: int, bf16: bool, compiled: bool, steps: int) -> dict:
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    forward = torch.compile(step) if compiled else step
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def one() -> None:
        with autocast:
            loss = forward()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_start = time.perf_counter()
    one()  # warm-up (and compilation)
    warm = time.perf_counter() - t_start
    with FlopCounterMode(display=False) as counter:
        one()
    flops = counter.get_total_flops()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    seconds = (time.perf_counter() - t0) / steps
    return {"samples_s": batch / seconds, "ms": seconds * 1e3, "gflops": flops / seconds / 1e9, "warm_s": warm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["text", "cnn", "vit", "clip", "smcim", "transformer", "albef",
                                                          "glip", "ala", "blip"])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (adds a minute per model)")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    P = load_params(find_params_file())
    builders = {
        "text": lambda: text_step(P.pretrain.text.batch_size),
        "cnn": lambda: backbone_step("cnn", P.pretrain.cnn.batch_size),
        "vit": lambda: backbone_step("vit", P.pretrain.vit.batch_size),
        "smcim": lambda: smcim_step("full", P.smcim.train.batch_size),
        "transformer": lambda: smcim_step("transformer", P.smcim.train.batch_size),
        "clip": lambda: clip_step(P.pretrain.clip.batch_size),
        "albef": lambda: albef_step(P.amc.batch_size),
        "glip": lambda: glip_step("deep", P.glip.train.batch_size),
        "ala": lambda: ala_step(P.ala.train.batch_size),
        "blip": lambda: blip_step(P.blip.train.batch_size),
    }
    batches = {"text": P.pretrain.text.batch_size, "cnn": P.pretrain.cnn.batch_size, "vit": P.pretrain.vit.batch_size,
               "smcim": P.smcim.train.batch_size, "transformer": P.smcim.train.batch_size,
               "clip": P.pretrain.clip.batch_size, "albef": P.amc.batch_size,
               "glip": P.glip.train.batch_size, "ala": P.ala.train.batch_size,
               "blip": P.blip.train.batch_size}  # fmt: skip
    # the pretrain stage's checkpoint each model starts from (dvc repro pretrain)
    needs = {"text": "text"} | dict.fromkeys(("clip", "albef", "glip", "ala", "blip"), "clip")
    if missing := [m for m in args.models if m in needs and not Path("checkpoints/pretrain", needs[m]).is_dir()]:
        print(f"checkpoints/pretrain missing (dvc repro pretrain): {', '.join(missing)} skipped")
        args.models = [m for m in args.models if m not in missing]
    print(f"{'model':12} {'thr':>3} {'prec':>5} {'mode':>7} {'batch':>5} {'ms/step':>8} {'samples/s':>9} "
          f"{'GFLOP/s':>8} {'peak':>6} {'% peak':>6}")  # fmt: skip
    for threads in args.threads:
        torch.set_num_threads(threads)
        peak = {False: matmul_peak(torch.float32), True: matmul_peak(torch.bfloat16)}
        print(f"-- {threads} thread(s): matmul peak fp32 {peak[False]:.1f} GFLOP/s, bf16 {peak[True]:.1f} GFLOP/s")
        for name in args.models:
            for bf16 in (False, True):
                for compiled in (False, True) if args.compile else (False,):
                    torch.manual_seed(0)
                    model, step = builders[name]()
                    r = measure(model, step, batches[name], bf16, compiled, args.steps)
                    prec, mode = ("bf16" if bf16 else "fp32"), ("compile" if compiled else "eager")
                    print(f"{name:12} {threads:>3} {prec:>5} {mode:>7} {batches[name]:>5} {r['ms']:>8.1f} "
                          f"{r['samples_s']:>9.0f} {r['gflops']:>8.1f} {peak[bf16]:>6.1f} "
                          f"{100 * r['gflops'] / peak[bf16]:>5.1f}%", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
