"""Start a matrix run's command without paying Python's start-up for torch each time.

A fresh ``python -m vlrepro.smcim run ...`` spends about 4.5 s importing torch, torchvision, timm,
transformers and ``torch._dynamo`` (which the first ``torch.optim`` optimizer pulls in) before its first
training step: as long as a whole smoke-profile run. :class:`Launcher` starts ``python -m <module> ...``
commands as forks of a :mod:`multiprocessing` fork server that imported those third-party packages once,
with the runs' thread settings in its environment. vlrepro's own modules are *not* preloaded: each run
imports them afresh, so an edit to the code between two runs reaches the next run, as it would in a new
process. Any other command (a shell pipeline, another interpreter) runs as a plain subprocess.

A forked run computes what the same command computes in its own process: same code, same thread count,
same seeds (``tests/test_launch.py`` compares the two).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

# Third-party packages the runs import; not vlrepro (see the module docstring). A missing one is skipped.
PRELOAD = ["numpy", "torch", "torch.optim", "torch._dynamo", "torchvision", "timm", "transformers", "tokenizers",
           "PIL.Image", "pandas", "scipy.optimize", "yaml", "tqdm.auto"]  # fmt: skip


class ForkedRun:
    """A run started in the fork server, with the part of :class:`subprocess.Popen`'s interface the runners use."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode


def python_module_argv(cmd: str) -> list[str] | None:
    """``["vlrepro.smcim", "run", ...]`` for a command ``python -m vlrepro.smcim run ...``, else None."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        return None
    shell_syntax = any(c in cmd for c in ";|&<>$`\n")  # a command the shell would have to interpret
    if len(words) >= 3 and words[:2] == ["python", "-m"] and not shell_syntax:
        return words[2:]
    return None


def _run_module(argv: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """The forked child: become ``python -m argv[0] argv[1:]`` with ``env``, writing to ``log``."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)  # its SystemExit is the exit code


_server_env: dict[str, str] | None = None  # the environment the fork server (one per process) started with


def _fork_server(env: dict[str, str]) -> multiprocessing.context.BaseContext | None:
    """The fork server's context, started with ``env`` on first use; None if it runs with another environment."""
    global _server_env
    context = multiprocessing.get_context("forkserver")
    if _server_env is None:
        context.set_forkserver_preload(PRELOAD)
        # The server is spawned with this process's environment, and torch reads its thread settings
        # (OMP_NUM_THREADS) when it is imported there.
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _server_env = dict(env)
    return context if env == _server_env else None


class Launcher:
    """Starts stage commands with ``env``: ``python -m`` ones as forks of the fork server, others as subprocesses.

    A fork imports what this process would import, so it is used only when a new process would have done the
    same: ``python`` on ``env``'s PATH is this interpreter (as :func:`vlrepro.matrix.stage_env` makes it) and
    ``env`` does not point PYTHONPATH elsewhere (``vlrepro.verify`` runs a clone's own code that way)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        python = shutil.which("python", path=self.env.get("PATH", ""))
        self.forks = (python is not None and Path(python).resolve() == Path(sys.executable).resolve()
                      and self.env.get("PYTHONPATH") == os.environ.get("PYTHONPATH"))  # fmt: skip

    def start(self, cmd: str, cwd: Path, log: Path) -> subprocess.Popen | ForkedRun:
        argv = python_module_argv(cmd) if self.forks else None
        context = _fork_server(self.env) if argv else None
        if context is None:
            with open(log, "w") as out:
                return subprocess.Popen(cmd, shell=True, cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        process = context.Process(target=_run_module, args=(argv, self.env, str(cwd), str(log)),
                                              name=argv[0])  # fmt: skip
        process.start()
        return ForkedRun(process)
