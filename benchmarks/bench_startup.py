"""What a matrix run's process spends before its first training step, piece by piece.

    .venv/bin/python benchmarks/bench_startup.py            # median of 5 fresh processes per row

Each row is a fresh ``python -c`` process (so nothing is cached in the interpreter), timed from the
outside: the bare interpreter, validating one paper's params section (what ``python -m vlrepro.<paper>``
does first, before torch is imported), validating every section (what each process did before sections
were loaded by name), ``import torch`` alone, and the import of each paper's run module (torch included).
A row minus the interpreter is that step's cost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from vlrepro.config import find_params_file

ROWS = {
    "interpreter": "pass",
    "params: one section (smcim)": "from vlrepro.config import load_params; load_params({p!r}, sections=['smcim'])",
    "params: every section": "from vlrepro.config import load_params; load_params({p!r})",
    "import torch": "import torch",
    "import vlrepro.smcim.run": "import vlrepro.smcim.run",
    "import vlrepro.amc.run": "import vlrepro.amc.run",
}


def seconds(code: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = str(find_params_file())
    base = seconds(ROWS["interpreter"], args.repeats)
    print(f"{'step':32s} {'process s':>9s} {'minus interpreter':>17s}")
    for name, code in ROWS.items():
        s = base if name == "interpreter" else seconds(code.format(p=params), args.repeats)
        print(f"{name:32s} {s:9.2f} {s - base:17.2f}")


if __name__ == "__main__":
    main()
