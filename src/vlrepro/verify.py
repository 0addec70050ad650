"""``python -m vlrepro.verify [STAGE ...]``: do the committed results come back? (``make verify``)

1. Clones the repository's last commit into ``.dvc/tmp/verify/<time>/`` (uncommitted edits are not what is
   verified), lets the clone use this repository's DVC cache and checks out the recorded data, features and
   checkpoints there.
2. Re-runs there either the whole pipeline (every record dropped from the clone's ``dvc.lock``, then the matrix
   runner and ``dvc repro``, as ``make repro``), or only the named stages (a matrix family such as ``smcim``
   names all its runs) on the recorded outputs of the stages before them.
3. Compares every number in the clone's ``reports/metrics/`` with the committed files, evaluates the learning
   gates and the claims ledger on both, and prints what moved, by how much, and which gate or verdict would
   change. Exit status 1 when a metric moved beyond its tolerance or went missing (wall-clock times, such as
   a run's ``seconds``, are shown but never compared).

Tolerance. On the same kind of machine with the same thread counts a re-run is bit-identical (README,
"Reproducing our numbers"), so by default every metric must come back exactly. ``--across-machines``
treats a re-run on another CPU like another draw of the seed: a metric may move by up to two sample standard
deviations of the committed seeds of the same stage, variant and metric; a metric without seeds (``data``,
``pretrain``, single runs) by twice the median relative seed spread of the seeded metrics that vary, times its
value.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from vlrepro.matrix import ONE_THREAD, stage_env
from vlrepro.report.claims import claims_ledger
from vlrepro.report.collect import Collection, collect
from vlrepro.report.gates import evaluate_gates

METRICS = Path("reports") / "metrics"
KEY = ["file", "metric"]
TIMING = {"seconds"}  # metric names that are wall-clock times


def _env(work: Path) -> dict[str, str]:
    # The clone's own `src/` comes before the editable install of this checkout: the committed code is verified.
    return {**stage_env(), "PYTHONPATH": os.pathsep.join([str(work / "src"), os.environ.get("PYTHONPATH", "")])}


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(cwd), check=check, text=True)


def scratch_clone(root: Path) -> Path:
    """A clone of ``root``'s last commit under its ``.dvc/tmp/verify/``, with ``root``'s DVC cache checked out."""
    work = root / ".dvc" / "tmp" / "verify" / time.strftime("%Y%m%d-%H%M%S")
    subprocess.run(["git", "clone", "--quiet", str(root), str(work)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "cache", "dir", "--local", str((root / ".dvc" / "cache").resolve())], work)
    # Outputs whose cache is missing (never run here) are simply re-made by the runs that need them.
    if _run([*dvc, "checkout", "--quiet"], work, check=False).returncode:
        print("verify: some recorded outputs are not in this repository's DVC cache (see above)", flush=True)
    return work


def forget_all(lock_file: Path) -> list[str]:
    """Drop every stage's record from ``dvc.lock``, so that the pipeline runs again; returns their names."""
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {}
    names = list(lock.get("stages", {}))
    lock_file.write_text(yaml.safe_dump({**lock, "stages": {}}, sort_keys=False))
    return names


def select(stages: list, names: list[str]) -> list:
    """The named stages (``family`` names every ``family@...`` run); an unknown name is an error."""
    chosen = []
    for name in names:
        hit = [s for s in stages if s.name == name or s.name.startswith(f"{name}@")]
        if not hit:
            raise ValueError(f"dvc.yaml has no stage {name!r} (stages: {', '.join(s.name for s in stages)})")
        chosen += [s for s in hit if s not in chosen]
    return chosen


def rerun_pipeline(work: Path, jobs: int) -> None:
    """Everything, as ``make repro`` does: the matrix runner, then ``dvc repro``."""
    _run([sys.executable, "-m", "vlrepro.matrix", "--jobs", str(jobs)], work)
    _run([sys.executable, "-m", "dvc", "repro"], work)


def rerun_stages(work: Path, stages: list, jobs: int) -> None:
    """Run the given stages' commands on the recorded inputs, ``jobs`` at a time (matrix runs with one thread).

    DVC is bypassed on purpose: upstream stages are not re-run (their recorded outputs are the inputs), even
    when the committed ``dvc.lock`` is older than the code. Each stage's outputs are deleted first, as
    ``dvc repro`` does, so that nothing is resumed from the recorded run. A stage whose inputs another of
    the given stages writes (``blip_capfilt@0`` after ``blip@share_all_but_sa-0``) waits for that one.
    """
    logs = work / ".dvc" / "tmp" / "verify-logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = _env(work)
    pending, running = list(stages), {}
    inputs_of = {s.name: [other.name for other in stages if other is not s and _feeds(other, s)] for s in stages}
    while pending or running:
        unfinished = {s.name for s in pending} | set(running)
        ready = [s for s in pending if not unfinished.intersection(inputs_of[s.name])]
        if not ready and not running:
            raise ValueError(f"stages {', '.join(s.name for s in pending)} feed each other; name them apart")
        while ready and len(running) < jobs:
            stage = ready.pop(0)
            pending.remove(stage)
            for out in stage.outs:
                path = work / out.def_path
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            env = {**base, **ONE_THREAD} if "@" in stage.name else base
            log = open(logs / f"{stage.name}.log", "w")  # noqa: SIM115  # closed when the process ends
            proc = subprocess.Popen(stage.cmd, shell=True, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[stage.name] = (proc, log, time.perf_counter())
        time.sleep(0.5)
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode:
                for other, _, _ in running.values():
                    other.kill()
                raise subprocess.CalledProcessError(proc.returncode, f"{name} (log: {log.name})")
            print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)


def _feeds(upstream, downstream) -> bool:
    """Does one of ``upstream``'s outputs contain, or lie inside, one of ``downstream``'s dependencies?"""
    outs = [Path(o.def_path) for o in upstream.outs]
    deps = [Path(d.def_path) for d in downstream.deps]
    return any(o == d or o in d.parents or d in o.parents for o in outs for d in deps)


def tolerances(values: pd.DataFrame, across_machines: bool) -> pd.Series:
    """The allowed |change| of every row of a collection's values (see the module docstring)."""
    if not across_machines:
        return pd.Series(0.0, index=values.index)
    seeded = values.dropna(subset=["seed"])
    groups = seeded.groupby(["stage", "variant", "metric"])["value"]
    spread = groups.std(ddof=1).dropna()
    relative = (spread / groups.mean().abs().reindex(spread.index)).replace([math.inf], float("nan")).dropna()
    relative = relative[relative > 0]  # metrics that never vary (step counts, fixed controls) say nothing of noise
    fallback = 2 * float(relative.median()) if len(relative) else 0.0
    keys = pd.MultiIndex.from_frame(values[["stage", "variant", "metric"]])
    tol = pd.Series(2 * spread.reindex(keys).to_numpy(), index=values.index)
    return tol.fillna(values["value"].abs() * fallback)


def is_timing(metric: str) -> bool:
    """Wall-clock figures (``seconds``) measure the machine, not the result: shown, never a failure."""
    return metric.rsplit(".", 1)[-1] in TIMING


def compare(committed: Collection, again: Collection, across_machines: bool = False) -> pd.DataFrame:
    """One row per (file, metric) of either collection: committed and re-run value, change, tolerance and
    ``status`` (``same``, ``within`` tolerance, ``moved`` beyond it, ``missing`` from the re-run, ``new``, or
    ``timing`` for a wall-clock figure that changed)."""
    a = committed.values.assign(tolerance=tolerances(committed.values, across_machines))
    table = a[[*KEY, "value", "tolerance"]].merge(
        again.values[[*KEY, "value"]], on=KEY, how="outer", suffixes=("_committed", "_rerun"), indicator=True
    )
    table["change"] = table["value_rerun"] - table["value_committed"]
    exact = table["value_rerun"] == table["value_committed"]
    status = pd.Series("moved", index=table.index)
    status[table["change"].abs() <= table["tolerance"]] = "within"
    status[table["metric"].map(is_timing)] = "timing"
    status[exact] = "same"
    status[table["_merge"] == "left_only"] = "missing"
    status[table["_merge"] == "right_only"] = "new"
    table["status"] = status
    columns = [*KEY, "value_committed", "value_rerun", "change", "tolerance", "status"]
    return table[columns].sort_values(KEY, ignore_index=True)


def judged(collection: Collection, alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The learning gates and the claims ledger of a collection."""
    gates = evaluate_gates(collection)
    return gates, claims_ledger(collection, alpha, gates)


def changed_judgements(before: Collection, after: Collection, alpha: float) -> list[str]:
    """Lines naming each learning gate and claim verdict that differs between the two collections."""
    (g0, l0), (g1, l1) = judged(before, alpha), judged(after, alpha)
    lines = []
    gate_key = ["stage", "variant", "metric", "control", "rule"]
    gates = g0.merge(g1, on=gate_key, how="outer", suffixes=("_0", "_1"))
    for _, r in gates[gates["passed_0"] != gates["passed_1"]].iterrows():
        lines.append(f"gate {r['stage']}/{r['variant']} {r['metric']} vs {r['control']}: "
                     f"{_passed(r['passed_0'])} -> {_passed(r['passed_1'])}")  # fmt: skip
    claim_key = ["paper", "claim", "variant", "reference_variant", "metric"]
    ledger = l0.merge(l1, on=claim_key, how="outer", suffixes=("_0", "_1"))
    for _, r in ledger[ledger["verdict_0"] != ledger["verdict_1"]].iterrows():
        lines.append(f"claim {r['paper']}: {r['claim']} ({r['variant']} vs {r['reference_variant']}): "
                     f"{r['verdict_0']} -> {r['verdict_1']}")  # fmt: skip
    return lines


def _passed(x: object) -> str:
    return "absent" if not isinstance(x, bool) else "passes" if x else "fails"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="*", help="stages or matrix families to re-run (default: the whole pipeline)")
    ap.add_argument("--across-machines", action="store_true", help="tolerances from the seed spread, not 0")
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="matrix runs at once")
    ap.add_argument("--keep", action="store_true", help="keep the scratch clone (it is kept anyway on failure)")
    args = ap.parse_args(argv)
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        print(f"error: {root} has no dvc.yaml; run this in the repository's root", file=sys.stderr)
        return 2

    work = scratch_clone(root)
    committed = collect(work / METRICS)  # the clone holds exactly the committed files
    t0 = time.perf_counter()
    try:
        if args.stages:
            from dvc.repo import Repo

            stages = select(list(Repo(str(work)).index.stages), args.stages)
            print(f"verify: re-running {len(stages)} stage(s) in {work}", flush=True)
            rerun_stages(work, stages, max(1, args.jobs))
        else:
            dropped = forget_all(work / "dvc.lock")
            print(f"verify: re-running the pipeline ({len(dropped)} stages) in {work}", flush=True)
            rerun_pipeline(work, max(1, args.jobs))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        shutil.rmtree(work)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"error: the re-run failed ({e}); the clone is kept in {work}", file=sys.stderr)
        return 1
    again = collect(work / METRICS)

    from vlrepro.config import load_params

    alpha = load_params(work / "params.yaml", sections=["report"]).report.alpha
    table = compare(committed, again, args.across_machines)
    moved = table[table["status"] != "same"]
    counts = table["status"].value_counts().to_dict()
    print(f"\nverify: {len(table)} metrics in {table['file'].nunique()} files after {time.perf_counter() - t0:.0f} s "
          f"of re-runs: {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}")  # fmt: skip
    if len(moved):
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(moved.to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    for line in changed_judgements(committed, again, alpha):
        print(f"would change: {line}")
    failed = moved["status"].isin(["moved", "missing"]).any()
    if failed or args.keep:
        print(f"the clone is kept in {work}")
    else:
        shutil.rmtree(work)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
