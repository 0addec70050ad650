"""The matrix runner on a tiny DVC project: parallel runs recorded as `dvc repro` would, failures reported."""

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent

# Each run sleeps, so that two at a time finish clearly faster than one after another, and records the
# thread setting it was started with (the runner gives every run one thread).
RUN = (
    "import os, sys, time; time.sleep(1.0); n = sys.argv[1]; "
    "open(f'out/{n}.txt', 'w').write(open('input.txt').read() + n + os.environ.get('OMP_NUM_THREADS', '-')); "
    "sys.exit(int(n == 'bad'))"
)


# A second family: next@x reads runs@x's output and records when it started.
NEXT = (
    "import sys, time; t = time.time(); time.sleep(1.0); n = sys.argv[1]; "
    "open(f'out/next-{n}.txt', 'w').write(f'{t} ' + open(f'out/{n}.txt').read())"
)


def sh(*cmd: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def project(root: Path, items: list[str]) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (root / "run.py").write_text(RUN)
    (root / "out").mkdir()
    stages = {
        "prep": {"cmd": "python -c \"open('input.txt', 'w').write('in:')\"", "outs": [{"input.txt": {"cache": False}}]},
        "runs": {"matrix": {"name": items}, "cmd": "python run.py ${item.name}", "deps": ["run.py", "input.txt"],
                 "outs": [{"out/${item.name}.txt": {"cache": False}}]},
    }  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    sh("git", "init", "-q", cwd=root, env=env)
    sh("dvc", "init", "-q", cwd=root, env=env)
    return env


def add_next_family(root: Path, items: list[str]) -> None:
    (root / "next.py").write_text(NEXT)
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["next"] = {"matrix": {"name": items}, "cmd": "python next.py ${item.name}",
                              "deps": ["next.py", "out/${item.name}.txt"],
                              "outs": [{"out/next-${item.name}.txt": {"cache": False}}]}  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def test_runs_in_parallel_and_records_what_dvc_repro_would(tmp_path):
    env = project(tmp_path, ["a", "b", "c", "d"])
    t0 = time.perf_counter()
    out = sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=tmp_path, env=env)
    elapsed = time.perf_counter() - t0
    assert "runs: 4 of 4 runs to do, 2 at a time" in out.stdout
    assert (tmp_path / "input.txt").is_file()  # the upstream stage ran first
    assert [(tmp_path / "out" / f"{n}.txt").read_text() for n in "abcd"] == [f"in:{n}1" for n in "abcd"]
    status = sh("dvc", "status", cwd=tmp_path, env=env).stdout
    assert "up to date" in status, status  # dvc.lock holds every run, as if dvc repro had run them
    assert "didn't change" in sh("dvc", "repro", cwd=tmp_path, env=env).stdout
    print(f"\n4 runs of 1 s, 2 at a time: {elapsed:.1f} s in all (DVC start-up included)")
    # a second call finds nothing to do
    assert "0 of 4 runs to do" in sh(sys.executable, "-m", "vlrepro.matrix", cwd=tmp_path, env=env).stdout
    # a changed dependency makes every run out of date again
    (tmp_path / "run.py").write_text(RUN + "  # changed")
    assert "4 of 4 runs to do" in sh(sys.executable, "-m", "vlrepro.matrix", cwd=tmp_path, env=env).stdout


def test_a_runs_python_is_the_runners_interpreter_without_an_activated_environment(tmp_path):
    env = project(tmp_path, ["a"])
    (tmp_path / "run.py").write_text("import sys, vlrepro; open(f'out/{sys.argv[1]}.txt', 'w').write(sys.executable)")
    bare = {**env, "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)}
    sh(sys.executable, "-m", "vlrepro.matrix", cwd=tmp_path, env=bare)
    assert Path((tmp_path / "out" / "a.txt").read_text()).parent == BIN


def test_a_failed_run_stops_the_runner_and_stays_out_of_date(tmp_path):
    env = project(tmp_path, ["bad", "good", "later"])
    out = sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=tmp_path, env=env, check=False)
    assert out.returncode == 1 and "runs@bad" in out.stderr
    assert (tmp_path / ".dvc" / "tmp" / "matrix" / "runs@bad.log").is_file()
    status = sh("dvc", "status", "runs@bad", "runs@good", "runs@later", cwd=tmp_path, env=env).stdout
    assert "runs@bad" in status and "runs@later" in status  # not recorded; nothing new started after the failure
    assert "runs@good" not in status  # the run in flight beside it finished and was recorded


def test_unknown_family_is_an_error_naming_it(tmp_path):
    env = project(tmp_path, ["a"])
    out = sh(sys.executable, "-m", "vlrepro.matrix", "nope", cwd=tmp_path, env=env, check=False)
    assert out.returncode == 2 and "no matrix stage named nope" in out.stderr and "have: runs" in out.stderr


def test_a_run_whose_dependencies_changed_meanwhile_is_not_recorded(tmp_path):
    env = project(tmp_path, ["a"])
    sh("dvc", "repro", "prep", cwd=tmp_path, env=env)
    proc = subprocess.Popen([sys.executable, "-m", "vlrepro.matrix"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    log = tmp_path / ".dvc" / "tmp" / "matrix" / "runs@a.log"
    for _ in range(200):  # until the run has started
        if log.exists():
            break
        time.sleep(0.05)
    (tmp_path / "run.py").write_text(RUN + "  # edited while the run was going")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "dependencies changed while it ran" in out
    assert "runs@a" in sh("dvc", "status", "runs@a", cwd=tmp_path, env=env).stdout


def test_an_edit_to_params_the_run_does_not_read_leaves_it_recorded(tmp_path):
    env = project(tmp_path, ["a", "b"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"runs": {"x": 1}, "other": {"y": 1}}))
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    stages["stages"]["runs"]["params"] = ["runs"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    sh("dvc", "repro", "prep", cwd=tmp_path, env=env)
    proc = subprocess.Popen([sys.executable, "-m", "vlrepro.matrix", "--jobs", "1"], cwd=tmp_path, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    log = tmp_path / ".dvc" / "tmp" / "matrix" / "runs@a.log"
    for _ in range(200):  # until the first run has started
        if log.exists():
            break
        time.sleep(0.05)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"runs": {"x": 1}, "other": {"y": 2}}))  # not its key
    log = tmp_path / ".dvc" / "tmp" / "matrix" / "runs@b.log"
    for _ in range(200):  # until the second run has started: now edit a key it reads
        if log.exists():
            break
        time.sleep(0.05)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"runs": {"x": 2}, "other": {"y": 2}}))
    out, err = proc.communicate(timeout=120)
    assert "runs@a: its dependencies changed" not in out and "runs@b: its dependencies changed while it ran" in out
    recorded = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert "runs@a" in recorded and "runs@b" not in recorded


def test_a_removed_runs_outputs_are_removed_and_nothing_else(tmp_path):
    env = project(tmp_path, ["a", "b"])
    sh(sys.executable, "-m", "vlrepro.matrix", cwd=tmp_path, env=env)
    (tmp_path / "out" / "notes.md").write_text("not shaped like a run's output: kept")
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    stages["stages"]["runs"]["matrix"]["name"] = ["a"]  # variant b removed from the matrix
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    out = sh(sys.executable, "-m", "vlrepro.matrix", cwd=tmp_path, env=env).stdout
    assert "removed out/b.txt: no stage in dvc.yaml writes it any more" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "notes.md"]
    assert (tmp_path / "run.py").is_file() and (tmp_path / "input.txt").is_file()


def test_a_later_familys_run_starts_once_the_run_it_reads_is_done(tmp_path):
    """next@a need not wait for runs@c: it starts on the core that runs@a and runs@b left free."""
    env = project(tmp_path, ["a", "b", "c"])
    add_next_family(tmp_path, ["a", "b", "c"])
    out = sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=tmp_path, env=env).stdout
    assert "runs: 3 of 3 runs to do" in out and "next: 3 of 3 runs to do" in out
    started = float((tmp_path / "out" / "next-a.txt").read_text().split()[0])
    assert started < (tmp_path / "out" / "c.txt").stat().st_mtime
    assert [(tmp_path / "out" / f"next-{n}.txt").read_text().split()[1] for n in "abc"] == [f"in:{n}1" for n in "abc"]
    assert "up to date" in sh("dvc", "status", cwd=tmp_path, env=env).stdout


def test_a_run_whose_inputs_were_re_made_unchanged_is_not_run_again(tmp_path):
    env = project(tmp_path, ["a", "b"])
    add_next_family(tmp_path, ["a", "b"])
    sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=tmp_path, env=env)
    before = [(tmp_path / "out" / f"next-{n}.txt").read_text() for n in "ab"]
    (tmp_path / "run.py").write_text(RUN + "  # runs@a and runs@b re-run, with the same output")
    out = sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=tmp_path, env=env).stdout
    assert "runs: 2 of 2 runs to do" in out and "next: 2 of 2 runs to do" in out  # maybe: known once runs@ ran
    assert "next@a: up to date (its inputs were re-made unchanged)" in out
    assert [(tmp_path / "out" / f"next-{n}.txt").read_text() for n in "ab"] == before  # not re-run
    assert "up to date" in sh("dvc", "status", cwd=tmp_path, env=env).stdout


def test_bf16_settings_warn_only_on_a_cpu_without_bf16_and_only_for_the_families_run(tmp_path, monkeypatch):
    import vlrepro.hardware
    from vlrepro.matrix import bf16_warning

    params = tmp_path / "params.yaml"
    sections = {"amc": {"precision": "bf16"}, "glip": {"train": {"precision": "bf16"}},
                "blip": {"train": {"precision": "fp32"}}}
    params.write_text(yaml.safe_dump({"profile": "default", "seed": 0, **sections}))
    monkeypatch.setattr(vlrepro.hardware, "native_bf16", lambda: False)
    warning = bf16_warning(params, ["amc", "blip", "blip_capfilt"])
    assert "amc.precision" in warning and "glip" not in warning and "blip" not in warning
    assert "glip.train.precision" in bf16_warning(params, ["glip_transfer"])
    assert bf16_warning(params, ["blip", "smcim"]) is None  # fp32, or no such setting
    for answer in (True, None):  # bf16 instructions, or a CPU we cannot tell about
        monkeypatch.setattr(vlrepro.hardware, "native_bf16", lambda answer=answer: answer)
        assert bf16_warning(params, ["amc", "glip"]) is None


def test_recording_runs_at_once_writes_the_lock_file_dvc_commit_writes(tmp_path):
    env = project(tmp_path, ["a", "b", "c"])
    spec = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    spec["stages"]["runs"]["outs"] = ["out/${item.name}.txt"]  # in the DVC cache, as a real run's folder is
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sh("dvc", "repro", "prep", cwd=tmp_path, env=env)
    for name in "cab":
        sh("python", "run.py", name, cwd=tmp_path, env=env)
    recorded = (tmp_path / "dvc.lock").read_text()
    sh("dvc", "commit", "--force", "runs@c", "runs@a", "runs@b", cwd=tmp_path, env=env)
    by_dvc = (tmp_path / "dvc.lock").read_text()
    (tmp_path / "dvc.lock").write_text(recorded)
    sh(sys.executable, "-m", "vlrepro.commit", "runs@c", "runs@a", "runs@b", cwd=tmp_path, env=env)
    assert (tmp_path / "dvc.lock").read_text() == by_dvc
    assert "runs@b" in by_dvc
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=tmp_path, env=env).stdout
    bad = sh(sys.executable, "-m", "vlrepro.commit", "runs@a", "runs@zz", cwd=tmp_path, env=env, check=False)
    assert bad.returncode == 2 and "no stage named runs@zz" in bad.stderr
