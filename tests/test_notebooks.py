"""Conventions the pipeline relies on: clean notebooks with a parameters cell, stage names, outputs."""

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_with_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "params_file = None" in params[0].source
    assert nb.metadata.kernelspec.name == "vlrepro"


PAPER_STAGES = {"amc", "smcim", "glip", "ala", "blip"}
NOTEBOOK_CMD, MODULE_CMD = "python -m vlrepro.stage ", "python -m vlrepro."


def stage_kind(spec: dict) -> tuple[str, str, list[str] | None]:
    """``("notebook", name, sections)`` for a papermill stage, ``("module", package, [paper])`` for a paper's
    matrix/feature stage (``python -m vlrepro.<paper> ...``: a papermill kernel per matrix run would cost
    seconds each). ``sections``: the params.yaml sections the stage loads (``None``: all of them)."""
    cmd = spec["cmd"]
    words = cmd.split()
    if cmd.startswith(NOTEBOOK_CMD):
        sections = None
        if "--sections" in words:
            after = words[words.index("--sections") + 1 :]
            sections = after[: next((i for i, w in enumerate(after) if w.startswith("-")), len(after))]
        return "notebook", words[3], sections
    assert cmd.startswith(MODULE_CMD), f"unexpected stage command {cmd!r}"
    return "module", words[2], [words[2].split(".")[1]]


def test_stages_follow_design_conventions():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # The design's names; a paper may add `<paper>_<step>` stages (features, report) around its matrix.
    allowed = {"data", "pretrain", "report"} | PAPER_STAGES
    assert all(n in allowed or n.split("_")[0] in PAPER_STAGES for n in stages), sorted(stages)
    assert {"data", "report"} <= set(stages)
    for name, stage in stages.items():
        kind, target, sections = stage_kind(stage)
        if kind == "notebook":
            notebook = ROOT / "notebooks" / f"{target}.ipynb"
            assert notebook.is_file()
            if sections is not None:  # the notebook loads what the stage validated, and DVC tracks it
                assert f"sections={sections!r}" in notebook.read_text().replace('\\"', "'"), name
        if sections is not None:
            tracked = {str(p).split(".")[0] for p in stage.get("params", [])}
            assert set(sections) <= tracked, f"{name} loads params sections {sections} but DVC tracks {tracked}"
        if kind == "module":
            assert target.split(".")[1] == name.split("_")[0], f"{name} runs another paper's module {target}"
        if "matrix" in stage:
            # a paper's matrix (glip), or a second one that builds on it (glip_student: teachers are glip runs)
            assert name.split("_")[0] in PAPER_STAGES, name
            assert "seed" in stage["matrix"] and len(stage["matrix"]["seed"]) >= 3, name
        deps = stage.get("deps", [])
        assert not any(str(d).startswith("reports/notebooks") for d in deps), f"{name} depends on an executed notebook"
        for m in stage.get("metrics", []):
            assert next(iter(m)).startswith("reports/metrics/")
    assert "reports/metrics" in stages["report"]["deps"]


IMPORTED_FILES = """
import importlib, json, pkgutil, sys
kind, target = sys.argv[1], sys.argv[2]
if kind == "notebook":
    import nbformat
    nb = nbformat.read(target, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for line in cell.source.splitlines():
                if line.startswith(("import ", "from ")):
                    exec(line)
else:  # the package's every module: its entry point imports some of them only when a command needs them
    package = importlib.import_module(target)
    for info in pkgutil.iter_modules(package.__path__, target + "."):
        importlib.import_module(info.name)
from vlrepro.config import load_params  # a stage validates its own sections: their modules are imported
load_params(sys.argv[3], sections=json.loads(sys.argv[4]))
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith("vlrepro") and m.__file__)))
"""


@pytest.mark.parametrize("stage", sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_stage_deps_cover_the_library_code_it_imports(stage):
    import json
    import subprocess
    import sys

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    kind, target, sections = stage_kind(spec)
    # A notebook's path, or the paper's package (vlrepro.<paper>) of a module stage.
    target = str(ROOT / "notebooks" / f"{target}.ipynb") if kind == "notebook" else ".".join(target.split(".")[:2])
    out = subprocess.run([sys.executable, "-c", IMPORTED_FILES, kind, target, str(ROOT / "params.yaml"),
                          json.dumps(sections)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    deps = [ROOT / d for d in spec["deps"]]
    missing = [Path(f).relative_to(ROOT / "src").as_posix() for f in json.loads(out)
               if not any(Path(f) == d or d in Path(f).parents for d in deps)]
    assert not missing, f"stage {stage} imports library code it does not depend on: {missing}"
