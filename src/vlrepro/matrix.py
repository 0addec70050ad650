"""``python -m vlrepro.matrix [smcim amc ...] [--jobs 2]``: run matrix stages in parallel, recorded in dvc.lock.

``dvc repro`` runs one stage at a time. A matrix run (``smcim@full-0``) is a small model whose step uses
one core poorly, so on a 2-core machine two single-thread runs at once finish the matrix about twice as
fast as one after another. This runner

0. removes what a removed or renamed run left beside the matrix outputs (its metrics JSON, its run folder),
   so that the report no longer reads it,
1. asks ``dvc status`` which of the runs, and of the stages upstream of them, are out of date; when an
   upstream stage is (``data``, ``pretrain``, ``smcim_features``, ...), brings it up to date with
   ``dvc repro`` and asks again,
2. keeps the out-of-date runs, and the runs downstream of them (``blip_capfilt@0`` reads ``blip@...-0``),
3. runs their commands, ``--jobs`` at a time, each with one intra-op thread (``OMP_NUM_THREADS=1``), a run as
   soon as the runs it reads are done (across families; the runs that most others wait on first); a run that
   was up to date at the start is checked again then and skipped if its inputs came back byte for byte. A
   ``python -m ...`` command runs as a fork of an interpreter that has torch loaded (:mod:`vlrepro.launch`),
   which saves each run about 4.5 s of imports, and
4. records finished runs as ``dvc commit --force`` does (:mod:`vlrepro.commit`, which writes dvc.lock once
   for all of them) — the same dvc.lock entry ``dvc repro`` would write, since the command is the stage's
   own. A commit re-reads and rewrites the whole dvc.lock, seconds of a core with a hundred stages: it runs
   beside the next runs rather than between them, at most once a minute, and records every run that
   finished meanwhile in one call (runs of seconds, as in the smoke profile, would otherwise leave a core
   to DVC). A run whose dependencies changed while it ran (an edit to the
   code it depends on, or to a params.yaml key it reads; other sections may change) is not recorded: dvc.lock
   would claim the new code produced it.

A killed runner loses only the runs in flight or not yet committed; the next call starts from what dvc.lock
says is done, and a plain ``dvc repro`` afterwards finds these stages up to date. Each run's output goes to
``.dvc/tmp/matrix/<stage>.log``. Matrix runs set one thread themselves too, so a run gives the same numbers
whether this runner or ``dvc repro`` started it.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from vlrepro.launch import ForkedRun, Launcher

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COMMIT_EVERY = 60.0  # seconds between the starts of two commits while runs are still going
# Keys that put a run's matmuls under bf16 autocast: faster on a CPU with bf16 instructions, far slower without.
BF16_SETTINGS = ("amc.precision", "glip.train.precision", "ala.explain.rise_precision", "blip.train.precision")


# Waits for a `dvc commit` that a killed runner left finishing, rather than failing on DVC's lock.
DVC = [sys.executable, "-m", "dvc", "--wait-for-lock"]


def _dvc(*args: str, root: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([*DVC, *args], cwd=root, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out


def _start_commit(names: list[str], root: Path, log: Path) -> subprocess.Popen:
    # Its own session: a runner killed with its process group (Ctrl-C, kill -9) does not cut a commit
    # short half-way through writing dvc.lock.
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "vlrepro.commit", *names], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stage_env() -> dict[str, str]:
    """The environment for a stage's command: its `python` is this interpreter (whose environment has vlrepro),
    even when no virtual environment was activated."""
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def bf16_warning(params_file: Path, families: list[str]) -> str | None:
    """A warning when runs of ``families`` would compute in bf16 on a CPU that can only emulate it."""
    from vlrepro.config import load_params
    from vlrepro.hardware import native_bf16

    papers = {family.split("_")[0] for family in families}  # glip_transfer reads the glip section
    keys = [k for k in BF16_SETTINGS if k.split(".")[0] in papers]
    if not keys or native_bf16() is not False:
        return None
    params = load_params(params_file, sections=sorted({k.split(".")[0] for k in keys}))
    if not (slow := [k for k in keys if operator.attrgetter(k)(params) == "bf16"]):
        return None
    return (
        f"warning: {params_file.name} asks for bf16 autocast ({', '.join(slow)}), but this CPU has no bf16 "
        "instructions (AVX-512 BF16 or AMX): here bf16 runs tens of times slower than fp32. Set these keys to "
        "fp32 on this machine (figures: the README's Benchmarks section)."
    )


def matrix_stages(stages: list, families: list[str] | None = None) -> dict[str, list]:
    """``{family: [stage, ...]}`` of the matrix stages among dvc.yaml's ``stages`` (``family@item``), in file
    order."""
    every: dict[str, list] = {}
    for stage in stages:
        family, at, _ = stage.addressing.partition("@")
        if at:
            every.setdefault(family, []).append(stage)
    missing = sorted(set(families or []) - set(every))
    if missing:
        raise ValueError(f"dvc.yaml has no matrix stage named {', '.join(missing)}; have: {', '.join(every)}")
    return {f: stages for f, stages in every.items() if families is None or f in families}


def _producer_of(every: list) -> dict[Path, str]:
    """``{output path: name of the stage that writes it}`` over ``every`` stage."""
    return {Path(o.def_path): s.addressing for s in every for o in s.outs}


def _reads_from(stage, producer_of: dict[Path, str]) -> set[str]:
    """The stages whose outputs ``stage`` reads: a dependency is an output or lies inside an output folder."""
    names = set()
    for d in stage.deps:
        path = Path(d.def_path)
        names |= {producer_of[p] for p in (path, *path.parents) if p in producer_of}
    return names - {stage.addressing}


def upstream(stages: list, every: list) -> list[str]:
    """The stages among ``every`` whose outputs ``stages`` read (``dvc repro`` of these brings their inputs up
    to date)."""
    producer_of = _producer_of(every)
    names = set().union(*(_reads_from(s, producer_of) for s in stages))
    return sorted(names - {s.addressing for s in stages})


def fingerprint(root: Path, stage) -> dict[str, object]:
    """What the stage depends on, as it stands: ``{file: (mtime_ns, size)}`` of every file (directories walked)
    and, for a params dependency, the values of its keys, not the file: an edit to another section of
    params.yaml must not void a run that reads none of it."""
    from dvc.dependency.param import ParamsDependency

    out: dict[str, object] = {}
    for d in stage.deps:
        if isinstance(d, ParamsDependency):
            out[f"{d.def_path}: {', '.join(d.params)}"] = repr(sorted(d.read_params().items()))
            continue
        path = root / d.def_path
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path] if path.exists() else []
        out |= {str(f): (f.stat().st_mtime_ns, f.stat().st_size) for f in files}
    return out


def stale_outputs(root: Path, every: list) -> list[Path]:
    """Files and folders shaped like a matrix run's output (``reports/metrics/smcim/${item.variant}-${item.seed}.json``
    read as ``reports/metrics/smcim/*-*.json``) that no stage declares any more: a removed or renamed variant's
    metrics and run folders, which the report would otherwise still read."""
    declared = {(root / o.def_path).resolve() for s in every for o in s.outs}
    stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    patterns = set()
    for stage in stages.values():
        if "foreach" in stage or "matrix" in stage:
            for kind in ("outs", "metrics", "plots"):
                for out in stage.get(kind, []):
                    path = next(iter(out)) if isinstance(out, dict) else out
                    patterns.add(re.sub(r"\$\{[^}]*\}", "*", path))
    found = {p.resolve() for pattern in patterns for p in root.glob(pattern)}
    return sorted(p for p in found if p not in declared and not any(p in d.parents for d in declared))


def remove_stale_outputs(root: Path, every: list) -> None:
    for path in stale_outputs(root, every):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"removed {path.relative_to(root.resolve())}: no stage in dvc.yaml writes it any more", flush=True)


def out_of_date(root: Path, names: list[str], every: list) -> set[str]:
    """The stages among ``names`` and every stage upstream of them that ``dvc status`` finds out of date."""
    producer_of, by_name = _producer_of(every), {s.addressing: s for s in every}
    wanted, new = set(names), set(names)
    while new := set().union(*(_reads_from(by_name[n], producer_of) for n in new)) - wanted:
        wanted |= new
    # One status of the whole pipeline, filtered: naming a hundred targets makes DVC collect each on its own
    # (13 s against 2 s for the smoke pipeline's 99 runs).
    return set(json.loads(_dvc("status", "--json", root=root).stdout or "{}")) & wanted


def producers(stages: list, every: list) -> dict[str, set[str]]:
    """For each run of ``stages``, the runs among ``stages`` whose outputs it reads (e.g. ``blip_capfilt@0``
    reads ``blip@share_all_but_sa-0``'s model)."""
    names, producer_of = {s.addressing for s in stages}, _producer_of(every)
    return {s.addressing: _reads_from(s, producer_of) & names for s in stages}


def schedule(names: list[str], waits_for: dict[str, set[str]], stale: set[str]) -> tuple[list[str], set[str]]:
    """The runs to do, first the ones most runs wait on (directly or not; ties in ``names``' order), and those
    among them that are only *maybe* to do: up to date now, but downstream of a run to do, so out of date
    once that run has re-made their inputs (unless it re-makes them byte for byte)."""
    todo = {n for n in names if n in stale}
    while more := {n for n in names if n not in todo and waits_for[n] & todo}:
        todo |= more

    def downstream(name: str) -> set[str]:
        found: set[str] = set()
        while new := {n for n in names if waits_for[n] & (found | {name})} - found:
            found |= new
        return found

    weight = {n: len(downstream(n)) for n in todo}
    return sorted(todo, key=lambda n: (-weight[n], names.index(n))), todo - stale


def run_matrix(root: Path, families: dict[str, list], every: list, jobs: int) -> list[str]:
    """Run the out-of-date runs of ``families`` (``every``: all of dvc.yaml's stages); returns the failed ones.

    A run starts once the runs it reads from are done, so a later family's run (a CapFilt bootstrap) can use a
    core that the earlier family's last runs leave free."""
    stages = [s for group in families.values() for s in group]
    names = [s.addressing for s in stages]
    before = upstream(stages, every)
    stale = out_of_date(root, names, every)  # one `dvc status` when the inputs are already up to date
    if stale - set(names):
        print(f"dvc repro {' '.join(before)}", flush=True)
        subprocess.run([*DVC, "repro", *before], cwd=root, check=True, env=stage_env())
        stale = out_of_date(root, names, every)
    waits_for = producers(stages, every)
    todo, maybe = schedule(names, waits_for, stale)
    for family, group in families.items():
        n = sum(s.addressing in todo for s in group)
        print(f"{family}: {n} of {len(group)} runs to do, {jobs} at a time", flush=True)
    by_name = {s.addressing: s for s in stages}
    logs = root / ".dvc" / "tmp" / "matrix"
    logs.mkdir(parents=True, exist_ok=True)
    launcher = Launcher({**stage_env(), **ONE_THREAD})
    running: dict[str, tuple[subprocess.Popen | ForkedRun, float, dict]] = {}
    finished: list[str] = []  # done, waiting for the next commit
    commit: tuple[subprocess.Popen, list[str]] | None = None
    last_commit = -COMMIT_EVERY  # the first finished run is recorded at once
    failed: list[str] = []
    bar = tqdm(total=len(todo), desc="runs", unit="run")
    while todo or running or finished or commit:
        while len(running) < jobs:
            name = next((n for n in todo if not waits_for[n] & (set(todo) | set(running))), None)
            if name is None:
                break
            todo.remove(name)
            if name in maybe and name not in out_of_date(root, [name], every):
                tqdm.write(f"{name}: up to date (its inputs were re-made unchanged)")
                bar.update(1)
                continue
            deps = fingerprint(root, by_name[name])
            running[name] = (launcher.start(by_name[name].cmd, root, logs / f"{name}.log"), time.perf_counter(), deps)
        time.sleep(0.5)
        for name, (proc, t0, deps) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode:
                failed.append(name)
                todo.clear()
                tqdm.write(f"{name}: failed (exit {proc.returncode}); see {logs / f'{name}.log'}")
            elif fingerprint(root, by_name[name]) != deps:
                failed.append(name)
                todo.clear()
                tqdm.write(f"{name}: its dependencies changed while it ran; not recorded, run it again")
            else:
                finished.append(name)
                tqdm.write(f"{name}: done in {time.perf_counter() - t0:.0f} s")
            sys.stdout.flush()  # a log file is block-buffered: each run's line as it ends
        if commit and commit[0].poll() is not None:
            committer, recorded = commit
            commit = None
            if committer.returncode:
                failure = (logs / "commit.log").read_text()
                raise RuntimeError(f"recording {' '.join(recorded)} in dvc.lock failed:\n{failure}")
            bar.update(len(recorded))
        if finished and not commit and (time.monotonic() - last_commit >= COMMIT_EVERY or not (todo or running)):
            commit = (_start_commit(finished, root, logs / "commit.log"), finished)
            finished, last_commit = [], time.monotonic()
    bar.close()
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", help="matrix stage names (default: every matrix stage in dvc.yaml)")
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="runs at once (default: CPU cores)")
    args = ap.parse_args(argv)
    root = Path.cwd()
    try:
        from dvc.repo import Repo

        every = list(Repo(str(root)).index.stages)
        families = matrix_stages(every, args.families or None)
        warning = bf16_warning(root / "params.yaml", list(families))
    except ValueError as e:  # ConfigError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    remove_stale_outputs(root, every)
    t0 = time.perf_counter()
    if failed := run_matrix(root, families, every, max(1, args.jobs)):
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"matrix runs done in {time.perf_counter() - t0:.0f} s; `dvc repro` finishes the rest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
