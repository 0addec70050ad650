"""Generation throughput of the embedded world, per set, and the build time of the default suite.

Prints figures; asserts nothing. Usage::

    .venv/bin/python benchmarks/bench_world.py            # per-set throughput + full default build
    .venv/bin/python benchmarks/bench_world.py --images 100 --no-suite
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import GENERATORS, SETS, build_suite, image_rng, split_size


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="images generated per set for the throughput table")
    ap.add_argument("--no-suite", action="store_true", help="skip the full default-suite build")
    args = ap.parse_args()

    cfg = WorldConfig()
    print(f"machine: {os.cpu_count()} CPU cores; image_size {cfg.image_size}; one process")
    GENERATORS["cub"](cfg, "train", 0, image_rng(0, "warm", "up", 0))  # texture cache, species list
    print(f"{'set':<10} {'split':<6} {'images':>6} {'records':>7} {'seconds':>8} {'images/s':>9}")
    for set_name, splits in SETS.items():
        split = "test" if set_name == "odinw" else splits[0]  # odinw/train is small (k shots per category)
        n = min(args.images, split_size(cfg, set_name, split))
        start, records = time.perf_counter(), 0
        for i in range(n):
            _, parts = GENERATORS[set_name](cfg, split, i, image_rng(cfg.seed, set_name, split, i))
            records += len(parts)
        dt = time.perf_counter() - start
        print(f"{set_name:<10} {split:<6} {n:>6} {records:>7} {dt:>8.2f} {n / dt:>9.0f}")

    if not args.no_suite:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            manifest = build_suite(cfg, Path(tmp), progress=False)
            dt = time.perf_counter() - start
            images = sum(v["images"] for splits in manifest["sets"].values() for v in splits.values())
            records = sum(v["records"] for splits in manifest["sets"].values() for v in splits.values())
            size_mb = _folder_bytes(Path(tmp)) / 2**20
        print(
            f"default suite: {images} images, {records} records, {size_mb:.0f} MiB on disk, "
            f"built and saved in {dt:.1f} s ({images / dt:.0f} images/s)"
        )


if __name__ == "__main__":
    main()
