"""Parameters, FLOPs and batch-1 latency of SMCIM and the TransVG-style baseline, encoders included.

The card's efficiency claim is that CA2M is cheaper than a transformer encoder layer over the
concatenated sequence. We count both the fusion alone (where the two differ) and the whole model (CNN +
text encoder + fusion + head) on one image and one expression, as a REC system answers one query.
FLOPs come from ``torch.utils.flop_counter`` (matrix products and convolutions; a multiply-add counts 2).
Latency is the median wall time over ``repeats`` calls after ``warmup`` calls, in ms per expression.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlrepro.smcim.features import block_outputs
from vlrepro.smcim.online import EndToEnd


@dataclass(frozen=True)
class Cost:
    params_total: int
    params_fusion: int
    gflops_total: float
    gflops_fusion: float
    latency_ms: float  # whole model, batch 1

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


@torch.no_grad()
def measure(model: EndToEnd, image: torch.Tensor, expression: str, warmup: int = 5, repeats: int = 30) -> Cost:
    """Cost of answering ``expression`` about ``image`` (float (1, 3, H, W)) with ``model``."""
    model.eval()
    tok = model.text.tokenize([expression])
    ids, mask = tok["input_ids"], tok["attention_mask"]
    maps = model.visual_levels(image)
    words = block_outputs(model.text.hidden_states(ids, mask), model.text_blocks)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return Cost(
        params_total=count(model),
        params_fusion=count(model.fusion),
        gflops_total=_count_flops(lambda: model(image, ids, mask)) / 1e9,
        gflops_fusion=_count_flops(lambda: model.fusion(maps, words, mask)) / 1e9,
        latency_ms=_median_ms(lambda: model(image, ids, mask), warmup, repeats),
    )
