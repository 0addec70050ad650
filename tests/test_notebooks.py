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


def test_stages_follow_design_conventions():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    allowed = {"data", "pretrain", "amc", "smcim", "glip", "ala", "blip", "report"}
    assert set(stages) <= allowed and {"data", "report"} <= set(stages)
    for name, stage in stages.items():
        notebook = stage["cmd"].split()[-1]
        assert (ROOT / "notebooks" / f"{notebook}.ipynb").is_file()
        deps = stage.get("deps", [])
        assert not any(str(d).startswith("reports/notebooks") for d in deps), f"{name} depends on an executed notebook"
        for m in stage.get("metrics", []):
            assert next(iter(m)).startswith("reports/metrics/")
    assert "reports/metrics" in stages["report"]["deps"]


IMPORTED_FILES = """
import json, sys
import nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
for cell in nb.cells:
    if cell.cell_type == "code":
        for line in cell.source.splitlines():
            if line.startswith(("import ", "from ")):
                exec(line)
from vlrepro.config import load_params  # every stage validates params.yaml, which imports each section
load_params(sys.argv[2])
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith("vlrepro") and m.__file__)))
"""


@pytest.mark.parametrize("stage", sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]))
def test_stage_deps_cover_the_library_code_it_imports(stage):
    import json
    import subprocess
    import sys

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    notebook = ROOT / "notebooks" / f"{spec['cmd'].split()[-1]}.ipynb"
    out = subprocess.run([sys.executable, "-c", IMPORTED_FILES, str(notebook), str(ROOT / "params.yaml")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    deps = [ROOT / d for d in spec["deps"]]
    missing = [Path(f).relative_to(ROOT / "src").as_posix() for f in json.loads(out)
               if not any(Path(f) == d or d in Path(f).parents for d in deps)]
    assert not missing, f"stage {stage} imports library code it does not depend on: {missing}"
