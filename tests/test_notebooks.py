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
