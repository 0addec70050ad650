"""What a matrix run's process spends before its first training step, piece by piece.

    .venv/bin/python benchmarks/bench_startup.py            # median of 5 processes per row and way

Each row is a small ``python -m`` module timed from the outside, from start to exit, two ways: as a fresh
process (what ``dvc repro`` starts for a stage) and as a fork of the matrix runner's torch-preloaded server
(``vlrepro.launch``, what ``python -m vlrepro.matrix`` starts). The rows: the bare interpreter, validating
one paper's params section (what ``python -m vlrepro.<paper>`` does first), ``import torch``, the first
``torch.optim`` optimizer (it imports ``torch._dynamo``), and everything an SMCIM or AMC run does before its
data and first step (params, its run module, an optimizer). A row minus the interpreter is that step's cost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vlrepro.config import find_params_file
from vlrepro.launch import Launcher
from vlrepro.matrix import ONE_THREAD, stage_env

OPTIMIZER = "import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"
ROWS = {
    "interpreter": "pass",
    "params: one section (smcim)": "from vlrepro.config import load_params; load_params({p!r}, sections=['smcim'])",
    "import torch": "import torch",
    "first optimizer": OPTIMIZER,
    "smcim run before its data": "from vlrepro.config import load_params; load_params({p!r}, sections=['smcim']); "
    f"import vlrepro.smcim.run; {OPTIMIZER}",
    "amc run before its data": "from vlrepro.config import load_params; load_params({p!r}, sections=['amc']); "
    f"import vlrepro.amc.run; {OPTIMIZER}",
}


def seconds(start, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert start() == 0
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = str(find_params_file())
    env = {**stage_env(), **ONE_THREAD}
    launcher = Launcher(env)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sys.path.insert(0, tmp)  # the forks import the probes from this process's sys.path
        for i, code in enumerate(ROWS.values()):
            (folder / f"startup_probe_{i}.py").write_text(code.format(p=params) + "\n")
        launcher.start("python -m startup_probe_0", folder, folder / "log").wait()  # starts the fork server
        print(f"{'step':28s} {'fresh s':>8s} {'minus interp.':>13s} {'forked s':>9s} {'minus interp.':>13s}")
        base = None
        for i, name in enumerate(ROWS):
            module = f"startup_probe_{i}"
            fresh = seconds(lambda m=module: subprocess.run([sys.executable, "-m", m], cwd=folder, env=env).returncode,
                            args.repeats)  # fmt: skip
            forked = seconds(lambda m=module: launcher.start(f"python -m {m}", folder, folder / "log").wait(),
                             args.repeats)  # fmt: skip
            base = base or (fresh, forked)
            print(f"{name:28s} {fresh:8.2f} {fresh - base[0]:13.2f} {forked:9.2f} {forked - base[1]:13.2f}")


if __name__ == "__main__":
    main()
