"""A change to one paper's code or params section re-runs only that paper's stages and the report: checked
with ``dvc status`` on a scratch copy of the pipeline whose data and outputs are placeholders."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _dvc(*args: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The repository's code, notebooks, params and dvc.yaml in a fresh DVC repo, every data and output path
    a placeholder, all stages recorded as they are (``dvc commit``, nothing run): ``dvc status`` is clean."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("pipeline")
    for name in ("src", "notebooks", "requirements"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    _dvc("init", "--no-scm", cwd=root)
    with Repo(str(root)) as repo:
        paths = {str(Path(o.def_path)) for stage in repo.index.stages for o in (*stage.deps, *stage.outs)
                 if not getattr(o, "def_path", "").endswith((".yaml",)) and not hasattr(o, "params")}
    for rel in sorted(paths):
        path = root / rel
        if path.exists():
            continue
        if path.suffix:  # a file output (metrics JSON, figure, notebook)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("placeholder\n")
        else:  # a directory (data, checkpoints, run folders)
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder").write_text("placeholder\n")
    _dvc("commit", "--force", cwd=root)
    assert json.loads(_dvc("status", "--json", cwd=root) or "{}") == {}
    return root


def _stale(root: Path) -> set[str]:
    return set(json.loads(_dvc("status", "--json", cwd=root) or "{}"))


def _family(stage: str) -> str:
    return stage.split("@")[0].split("_")[0]


def test_one_papers_change_reruns_only_that_paper_and_the_report(scratch):
    config = scratch / "src" / "vlrepro" / "amc" / "config.py"  # one paper's code
    before = config.read_text()
    config.write_text(before + "\n# an edit\n")
    stale = _stale(scratch)
    assert {_family(s) for s in stale} == {"amc", "report"}, sorted(stale)  # the report validates every section
    config.write_text(before)
    # shared code that one paper's real-data path reads: only the stages importing it
    adapter = scratch / "src" / "vlrepro" / "data" / "real" / "visual_genome.py"
    before = adapter.read_text()
    adapter.write_text(before + "\n# an edit\n")
    stale = _stale(scratch)
    assert stale and {_family(s) for s in stale} <= {"data", "report"}, sorted(stale)  # not AMC's or SMCIM's runs
    adapter.write_text(before)
    # another paper's params section: the stages that read the key, not the report (it reads their metrics)
    params_file = scratch / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["smcim"]["train"]["steps"] += 1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    stale = _stale(scratch)
    assert stale and {_family(s) for s in stale} == {"smcim"}, sorted(stale)
    assert "smcim_features" not in stale  # it reads other keys of the section
