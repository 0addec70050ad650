"""The whole DVC pipeline in the `smoke` profile, in a scratch copy of the repository.

This is what makes a broken stage fail CI. It also checks that `dvc exp run -S` reaches the notebooks
and prints how long a no-op `dvc repro` takes (the target, < 15 s, is a benchmark figure, not a test).
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INPUTS = [
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "requirements",
    "notebooks",
    "src",
]


def sh(*cmd: str, cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def copy_repo(work: Path) -> dict[str, str]:
    """The pipeline's inputs copied to ``work``; returns the environment its commands run in."""
    for item in INPUTS:
        src, dst = ROOT / item, work / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke") / "repo"
    env = copy_repo(work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["profile"] = "smoke"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=work, env=env)
    sh("git", "add", "-A", cwd=work, env=env)
    sh("git", "commit", "-qm", "smoke", cwd=work, env=env)
    t0 = time.perf_counter()
    sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=work, env=env)  # what `make repro` runs first
    t_matrix = time.perf_counter()
    sh("dvc", "repro", cwd=work, env=env)
    print(f"\nsmoke pipeline: {time.perf_counter() - t0:.1f} s (matrix runner {t_matrix - t0:.1f} s)")
    return work, env


@pytest.mark.pipeline
def test_smoke_pipeline_writes_the_report(smoke_repo):
    work, _ = smoke_repo
    reports = work / "reports"
    report = (reports / "REPORT.md").read_text()
    assert "Paper-reported numbers" in report
    html = (reports / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
    with open(reports / "claims.csv") as f:
        header = next(csv.reader(f))
    assert header[:13] == [
        "paper",
        "claim",
        "metric",
        "variant",
        "reference_variant",
        "ours_mean",
        "ours_std",
        "reference_mean",
        "reference_std",
        "n_seeds",
        "test",
        "p_value",
        "verdict",
    ]
    data = json.loads((reports / "metrics" / "data.json").read_text())
    for split in ("val", "testA", "testB"):
        assert set(data["metrics"]["baselines"]["refcoco"][split]) >= {"random", "largest", "image_only"}
    for name in ("00_data", "10_pretrain", "90_report"):
        assert (reports / "notebooks" / f"{name}.ipynb").is_file()
        assert "<html" in (reports / "notebooks" / f"{name}.html").read_text().lower()
    # every paper's runs record their wall time, which the report's summary adds up per paper
    for paper in ("amc", "smcim", "glip", "ala", "blip"):
        runs = list((reports / "metrics" / paper).glob("*.json"))
        assert runs and all(json.loads(r.read_text())["metrics"]["seconds"] > 0 for r in runs), paper
    transfer = [
        json.loads((reports / "metrics" / "glip" / f"{m}-0.json").read_text())["metrics"]["seconds"]
        for m in ("fine_tuning", "prompt_tuning")
    ]
    assert transfer[0] == transfer[1]  # one process ran both modes: each file holds half its time
    summary = report.split("\n## Summary\n", 1)[1].split("\n## ", 1)[0]
    assert "| AMC " in summary and "not recorded" not in summary  # a wall time for every paper


@pytest.mark.pipeline
def test_smoke_pretrain_leaves_loadable_checkpoints_and_its_curve_in_the_report(smoke_repo):
    from vlrepro.models import load_pretrained

    work, _ = smoke_repo
    for name in ("text", "cnn", "vit", "clip"):
        load_pretrained(work / "checkpoints" / "pretrain" / name)
    metrics = json.loads((work / "reports" / "metrics" / "pretrain.json").read_text())["metrics"]
    assert set(metrics) == {"text", "cnn", "vit", "clip", "downstream"}
    assert set(metrics["clip"]["retrieval_r1"]) == {"pretrained", "untrained"}
    curve = json.loads((work / "reports" / "plots" / "pretrain_downstream.json").read_text())
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    assert all(set(p) == {"step", "pretrained", "scratch"} for p in curve)
    assert "figures/pretrain_downstream.png" in (work / "reports" / "REPORT.md").read_text()


@pytest.mark.pipeline
def test_smoke_smcim_runs_every_variant_and_seed_and_states_its_claims(smoke_repo):
    work, _ = smoke_repo
    matrix = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["smcim"]["matrix"]
    for variant in matrix["variant"]:
        for seed in matrix["seed"]:
            doc = json.loads((work / "reports" / "metrics" / "smcim" / f"{variant}-{seed}.json").read_text())
            assert (doc["stage"], doc["variant"], doc["seed"]) == ("smcim", variant, seed)
            assert 0 <= doc["metrics"]["refcoco"]["val"]["acc@0.5"] <= 1
    with open(work / "reports" / "claims.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["paper"] == "SMCIM"]
    assert {r["reference_variant"] for r in rows} >= {"levels_1", "no_self_paced", "transformer"}
    assert all(r["n_seeds"] == "3" and r["verdict"] for r in rows)
    history = json.loads((work / "reports" / "runs" / "smcim" / "full-0" / "history.json").read_text())
    assert [h["step"] for h in history if "val_acc@0.5" in h] == [2, 4]  # the learning curve (smoke eval_every 2)
    with open(work / "reports" / "gates.csv") as f:
        gates = [r for r in csv.DictReader(f) if r["paper"] == "SMCIM"]
    assert {r["variant"] for r in gates} == set(matrix["variant"])
    for r in gates:  # the bar is twice the random-object control, and passed says whether the value clears it
        assert float(r["bar"]) == pytest.approx(2 * float(r["control_value"]), rel=1e-5)
        assert (r["passed"] == "True") == (float(r["value"]) >= float(r["bar"]))
    failed = {r["variant"] for r in gates if r["passed"] != "True"}
    assert all(r["verdict"] == "not testable" for r in rows if {r["variant"], r["reference_variant"]} & failed)
    assert "figures/smcim_ablations.png" in (work / "reports" / "REPORT.md").read_text()
    assert "<html" in (work / "reports" / "notebooks" / "30_smcim.html").read_text().lower()


@pytest.mark.pipeline
def test_smoke_amc_runs_every_variant_and_seed_and_states_its_claims(smoke_repo):
    from vlrepro.models import load_pretrained

    work, _ = smoke_repo
    albef = load_pretrained(work / "checkpoints" / "albef")  # the pre-training phase every run starts from
    assert type(albef).__name__ == "ALBEF"
    curve = json.loads((work / "checkpoints" / "albef" / "history.json").read_text())
    assert curve[0]["step"] == 0 and {"val_itm_acc", "val_pointing"} <= set(curve[-1])
    matrix = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["amc"]["matrix"]
    for variant in matrix["variant"]:
        for seed in matrix["seed"]:
            doc = json.loads((work / "reports" / "metrics" / "amc" / f"{variant}-{seed}.json").read_text())
            assert (doc["stage"], doc["variant"], doc["seed"]) == ("amc", variant, seed)
            assert 0 <= doc["metrics"]["flickr"]["test"]["pointing"] <= 1
            history = json.loads((work / "runs" / "amc" / f"{variant}-{seed}" / "history.json").read_text())
            steps = yaml.safe_load((work / "params.yaml").read_text())["profiles"]["smoke"]["amc"]["steps"]
            assert [r["step"] for r in history if "val_pointing" in r] == [0, 2, steps]  # from untrained to the end
    with open(work / "reports" / "claims.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["paper"] == "AMC"]
    assert {r["reference_variant"] for r in rows} >= {"baseline", "mean_only", "max_only"}
    assert all(r["verdict"] for r in rows)
    assert "<html" in (work / "reports" / "notebooks" / "20_amc.html").read_text().lower()


@pytest.mark.pipeline
def test_second_repro_is_a_no_op(smoke_repo):
    # also shows that the matrix runner's `dvc commit` left dvc.lock as `dvc repro` would have
    work, env = smoke_repo
    t0 = time.perf_counter()
    out = sh("dvc", "repro", cwd=work, env=env)
    print(f"\nno-op dvc repro: {time.perf_counter() - t0:.1f} s")
    assert "didn't change, skipping" in out and "Running stage" not in out


@pytest.mark.pipeline
def test_exp_run_set_param_reaches_the_notebook(smoke_repo):
    work, env = smoke_repo
    sh("dvc", "exp", "run", "-S", "report.title=Smoke title from exp run", cwd=work, env=env)
    assert "Smoke title from exp run" in (work / "reports" / "REPORT.md").read_text()


def _recorded(work: Path, family: str) -> list[str]:
    try:
        lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    except (yaml.YAMLError, TypeError, KeyError):  # read while `dvc commit` rewrites it: not ready yet
        return []
    return [s for s in lock if s.startswith(f"{family}@")]


def _kill_when(cmd: list[str], work: Path, env: dict, ready, timeout: float = 900) -> None:
    """Start ``cmd`` in its own process group and kill -9 the whole group once ``ready()`` is true."""
    proc = subprocess.Popen(cmd, cwd=work, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"{' '.join(cmd)} ended before it could be killed"
        assert time.monotonic() < deadline, f"{' '.join(cmd)}: not ready after {timeout} s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_for_commits(work: Path, timeout: float = 300) -> None:
    """Wait until no `dvc commit` runs in ``work``: the matrix runner starts its commits in their own session,
    so that killing the runner does not cut one short, and one may still be writing dvc.lock."""

    def committing() -> bool:
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                if b"vlrepro.commit" in cmd and os.readlink(proc / "cwd") == str(work):
                    return True
            except OSError:  # not ours to read, or ended meanwhile
                continue
        return False

    deadline = time.monotonic() + timeout
    while committing():
        assert time.monotonic() < deadline, f"a dvc commit in {work} still runs after {timeout} s"
        time.sleep(0.2)


@pytest.mark.pipeline
def test_a_killed_repro_resumes_without_redoing_finished_runs_and_ends_with_the_same_metrics(smoke_repo):
    from vlrepro.report.collect import collect
    from vlrepro.verify import compare

    work, env = smoke_repo
    before = collect(work / "reports" / "metrics")
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    every = _recorded(work, "smcim")
    runs = every  # a forked smoke run takes about a second: fewer would all be done before the first commit lands
    kept = len(every) - len(runs)
    lock["stages"] = {k: v for k, v in lock["stages"].items() if k not in {*runs, "smcim_report"}}
    (work / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))  # as if these runs had never run
    # kill -9 in the middle of the matrix: once a first run is recorded, with others in flight
    _kill_when([sys.executable, "-m", "vlrepro.matrix", "smcim", "--jobs", "2"], work, env,
               lambda: len(_recorded(work, "smcim")) > kept)  # fmt: skip
    _wait_for_commits(work)
    done = len(_recorded(work, "smcim")) - kept
    assert 0 < done < len(runs)
    out = sh(sys.executable, "-m", "vlrepro.matrix", "smcim", "--jobs", "2", cwd=work, env=env)
    assert f"{len(runs) - done} of {len(every)} runs to do" in out  # finished runs are not redone
    # kill -9 in the middle of a notebook stage, then the same command again
    running = work / "reports" / "notebooks" / ".30_smcim.running.ipynb"
    _kill_when(["dvc", "repro", "smcim_report"], work, env, running.exists)
    sh("dvc", "repro", "smcim_report", cwd=work, env=env)
    assert "up to date" in sh("dvc", "status", "smcim", "smcim_report", cwd=work, env=env)
    table = compare(before, collect(work / "reports" / "metrics"))
    assert set(table["status"]) <= {"same", "timing"}, table[~table["status"].isin(["same", "timing"])]


@pytest.mark.pipeline
def test_verify_finds_a_clean_rerun_identical_and_flags_an_edited_metric(smoke_repo):
    work, env = smoke_repo
    sh("git", "add", "-A", cwd=work, env=env)
    sh("git", "commit", "-qm", "smoke results", cwd=work, env=env)
    # One run of every matrix family and the stages that train before them, not the whole pipeline again: that
    # doubled CI's time (25 min) for code paths these runs already exercise. `make verify` re-runs everything.
    stages = ["pretrain", "amc_pretrain", "amc@amc-0", "smcim_features", "smcim@full-0", "glip@deep_gold-0",
              "glip_student@student-0", "glip_transfer@0", "ala@full-0", "ala_baselines@0", "blip@share_all_but_sa-0",
              "blip_capfilt@0", "blip_bootstrap@capfilt-0"]  # fmt: skip
    t0 = time.perf_counter()
    out = sh(sys.executable, "-m", "vlrepro.verify", "--jobs", "2", *stages, cwd=work, env=env)
    print(f"\nmake verify {len(stages)} stages (smoke profile): {time.perf_counter() - t0:.0f} s")
    summary = next(line for line in out.splitlines() if line.startswith("verify: ") and "metrics in" in line)
    counts = {status: int(n) for n, status in (part.split() for part in summary.split(": ")[-1].split(", "))}
    assert set(counts) <= {"same", "timing"} and counts["same"] > 0, summary  # identical but for wall-clock times
    assert {line.split(":")[0] for line in out.splitlines() if ": done in " in line} == set(stages)  # all re-ran
    # a committed number that the code does not produce any more is caught
    path = work / "reports" / "metrics" / "smcim" / "full-0.json"
    doc = json.loads(path.read_text())
    doc["metrics"]["refcoco"]["val"]["acc@0.5"] += 0.1
    path.write_text(json.dumps(doc))
    sh("git", "commit", "-qam", "an edited metric", cwd=work, env=env)
    proc = subprocess.run([sys.executable, "-m", "vlrepro.verify", "smcim@full-0"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    moved = [line for line in proc.stdout.splitlines() if "smcim/full-0.json" in line and "refcoco.val.acc@0.5" in line]
    assert moved and "moved" in moved[0]
    sh("git", "revert", "--no-edit", "HEAD", cwd=work, env=env)
