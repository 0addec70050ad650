"""vlrepro.launch: a `python -m` command run as a fork of a torch-preloaded server behaves as its own process."""

import json
import subprocess
import sys

import pytest

from vlrepro.launch import ForkedRun, Launcher, python_module_argv
from vlrepro.matrix import ONE_THREAD, stage_env

# One environment for every launcher here: the fork server keeps the environment it started with.
ENV = {**stage_env(), **ONE_THREAD}

PROBE = """
import json, os, sys, torch
torch.manual_seed(int(sys.argv[2]))
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "name": __name__, "threads": torch.get_num_threads(),
                  "omp": os.environ.get("OMP_NUM_THREADS"), "version": VERSION,
                  "draw": torch.nn.Linear(8, 8)(torch.randn(4, 8)).sum().item()}))
if sys.argv[1] == "raise":
    raise ValueError("probe failed on purpose")
sys.exit(int(sys.argv[1]))
"""


def write_probe(folder, version: int) -> None:
    (folder / "probe_module.py").write_text(f"VERSION = {version}\n{PROBE}")


def test_only_plain_python_module_commands_are_forked():
    assert python_module_argv("python -m vlrepro.smcim run --variant full --seed 0") == [
        "vlrepro.smcim", "run", "--variant", "full", "--seed", "0"]  # fmt: skip
    assert python_module_argv("python -m x --name 'a b'") == ["x", "--name", "a b"]
    for cmd in ["python run.py a", "python -m x > out.txt", "python -m x && echo", "python -m x $HOME",
                "python3 -m x", "OMP_NUM_THREADS=2 python -m x", "python -m", "python -m 'x"]:  # fmt: skip
        assert python_module_argv(cmd) is None, cmd


@pytest.fixture
def probe(tmp_path, monkeypatch):
    write_probe(tmp_path, 1)
    monkeypatch.syspath_prepend(str(tmp_path))  # the fork imports from this process's sys.path
    return tmp_path


def test_a_forked_run_computes_and_exits_as_its_own_process_would(probe):
    run = Launcher(ENV).start("python -m probe_module 3 7", probe, probe / "fork.log")
    assert isinstance(run, ForkedRun)
    assert run.wait() == 3
    own = subprocess.run([sys.executable, "-m", "probe_module", "3", "7"], cwd=probe, env=ENV, capture_output=True,
                         text=True)  # fmt: skip
    assert own.returncode == 3
    forked, alone = json.loads((probe / "fork.log").read_text()), json.loads(own.stdout)
    assert forked == alone
    assert forked["name"] == "__main__" and forked["threads"] == 1 and forked["omp"] == "1"
    assert forked["cwd"] == str(probe)


def test_a_failed_forked_run_exits_non_zero_with_its_traceback_in_the_log(probe):
    run = Launcher(ENV).start("python -m probe_module raise 0", probe, probe / "fork.log")
    assert run.wait() == 1
    assert "ValueError: probe failed on purpose" in (probe / "fork.log").read_text()


def test_an_edit_to_the_code_reaches_the_next_forked_run(probe):
    launcher = Launcher(ENV)
    assert launcher.start("python -m probe_module 0 0", probe, probe / "1.log").wait() == 0
    write_probe(probe, 22)  # another length: a pyc of the same size and second would be reused
    assert launcher.start("python -m probe_module 0 0", probe, probe / "2.log").wait() == 0
    assert [json.loads((probe / f"{i}.log").read_text())["version"] for i in (1, 2)] == [1, 22]


def test_commands_a_fork_could_not_reproduce_run_as_subprocesses(probe):
    shell = Launcher(ENV).start("python -m probe_module 0 0 && echo after", probe, probe / "shell.log")
    assert isinstance(shell, subprocess.Popen) and shell.wait() == 0
    assert (probe / "shell.log").read_text().endswith("after\n")
    elsewhere = Launcher({**ENV, "PYTHONPATH": str(probe)}).start("python -m probe_module 0 0", probe, probe / "p.log")
    assert isinstance(elsewhere, subprocess.Popen) and elsewhere.wait() == 0
