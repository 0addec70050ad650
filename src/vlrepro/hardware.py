"""What this CPU computes natively, for settings whose speed depends on it."""

from __future__ import annotations

import platform


def native_bf16() -> bool | None:
    """Whether the CPU has bf16 matrix instructions (x86: AVX-512 BF16 or AMX); None where we cannot tell.

    Without them PyTorch emulates bf16 and a bf16 matmul runs tens of times slower than fp32 (the README's
    Benchmarks section has the figures), so a bf16 setting that pays off on one machine ruins another.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(probes):  # a torch without these (private) probes
        return None
    return any(probe() for probe in probes if probe is not None)
