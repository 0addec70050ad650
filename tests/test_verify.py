"""`vlrepro.verify`: the comparison of committed and re-run metrics, its tolerances, and what it says changed.

The command end to end (a scratch clone re-running stages) is exercised on the smoke pipeline in
tests/test_pipeline.py.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from vlrepro.io import write_metrics
from vlrepro.report.collect import collect
from vlrepro.verify import changed_judgements, compare, forget_all, rerun_stages, select

GATE = {"paper": "SMCIM", "variant": "full", "metric": "acc", "control": "chance", "control_value": 0.25,
        "rule": "times", "margin": 2.0}  # fmt: skip
CLAIM = {"paper": "SMCIM", "claim": "full beats small", "metric": "acc", "variant": "full",
         "reference_variant": "small", "higher_is_better": True}  # fmt: skip


def runs(root: Path, values: dict[tuple[str, int], dict[str, float]], data: float | None = 10.0) -> Path:
    """A metrics folder: stage ``s`` with ``{(variant, seed): metrics}``, and a seedless ``data`` stage."""
    for (variant, seed), metrics in values.items():
        gates = [{**GATE, "variant": variant}]
        claims = [CLAIM] if variant == "full" else []
        write_metrics(root / "s" / f"{variant}-{seed}.json", "s", metrics, variant, seed, claims=claims, gates=gates)
    if data is not None:
        write_metrics(root / "data.json", "data", {"n": data})
    return root


COMMITTED = {("full", 0): {"acc": 0.5, "y": 1.0, "seconds": 7.0}, ("full", 1): {"acc": 0.6, "y": 1.0}}


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    return runs(tmp_path / "a", COMMITTED)


def test_a_bit_identical_rerun_is_all_same(committed: Path, tmp_path: Path) -> None:
    again = runs(tmp_path / "b", COMMITTED)
    table = compare(collect(committed), collect(again))
    assert len(table) == 6 and set(table["status"]) == {"same"} and (table["change"] == 0).all()


def test_exact_mode_flags_any_change_and_missing_or_new_metrics(committed: Path, tmp_path: Path) -> None:
    again = runs(tmp_path / "b", {("full", 0): {"acc": 0.5, "y": 1.0, "seconds": 9.0},
                                  ("full", 1): {"acc": 0.61, "z": 2.0}})  # fmt: skip
    table = compare(collect(committed), collect(again)).set_index(["file", "metric"])
    assert table.loc[("s/full-0.json", "seconds"), "status"] == "timing"  # wall time: shown, not compared
    assert table.loc[("s/full-0.json", "acc"), "status"] == "same"
    moved = table.loc[("s/full-1.json", "acc")]
    assert moved["status"] == "moved" and moved["change"] == pytest.approx(0.01) and moved["tolerance"] == 0
    assert table.loc[("s/full-1.json", "y"), "status"] == "missing"
    assert table.loc[("s/full-1.json", "z"), "status"] == "new"


def test_across_machines_tolerance_is_twice_the_seed_spread(committed: Path, tmp_path: Path) -> None:
    # acc over seeds: 0.5, 0.6 -> sample std 0.0707, tolerance 0.1414; y: std 0, tolerance 0.
    # data.n has no seeds: 2 x the median relative spread of the seeded metrics that vary (0.0707 / 0.55) x 10.
    seeds = {("full", 0): {**COMMITTED["full", 0], "acc": 0.64}, ("full", 1): {"acc": 0.6, "y": 1.001}}
    again = runs(tmp_path / "b", seeds, data=11.0)
    table = compare(collect(committed), collect(again), across_machines=True).set_index(["file", "metric"])
    acc = table.loc[("s/full-0.json", "acc")]
    assert acc["tolerance"] == pytest.approx(2 * 0.1 / 2**0.5) and acc["status"] == "within"
    assert table.loc[("s/full-1.json", "y"), "status"] == "moved"  # no spread, any change is beyond it
    n = table.loc[("data.json", "n")]
    assert n["tolerance"] == pytest.approx(2 * (0.1 / 2**0.5 / 0.55) * 10) and n["status"] == "within"


def test_changed_gates_and_verdicts_are_named(tmp_path: Path) -> None:
    before = runs(tmp_path / "a", {("full", s): {"acc": 0.9 + s / 100} for s in range(3)}
                  | {("small", s): {"acc": [0.55, 0.58, 0.54][s]} for s in range(3)})  # fmt: skip
    after = runs(tmp_path / "b", {("full", s): {"acc": 0.9 + s / 100} for s in range(3)}
                 | {("small", s): {"acc": [0.45, 0.48, 0.44][s]} for s in range(3)})  # fmt: skip
    assert changed_judgements(collect(before), collect(before), alpha=0.05) == []
    lines = changed_judgements(collect(before), collect(after), alpha=0.05)
    assert "gate s/small acc vs chance: passes -> fails" in lines
    assert "claim SMCIM: full beats small (full vs small): reproduced -> not testable" in lines


def test_stages_are_selected_by_name_or_family_and_the_whole_lock_can_be_dropped(tmp_path: Path) -> None:
    stages = [SimpleNamespace(name=a) for a in ("data", "smcim@full-0", "smcim@full-1", "smcim_report")]
    assert [s.name for s in select(stages, ["smcim", "data", "smcim@full-1"])] == [
        "smcim@full-0", "smcim@full-1", "data"]  # fmt: skip
    with pytest.raises(ValueError, match="no stage 'nope'"):
        select(stages, ["nope"])
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"data": {}, "smcim@full-0": {}}}))
    assert forget_all(lock) == ["data", "smcim@full-0"]
    assert yaml.safe_load(lock.read_text()) == {"schema": "2.0", "stages": {}}


def test_a_stage_waits_for_the_given_stage_that_writes_its_inputs(tmp_path: Path) -> None:
    def stage(name: str, cmd: str, deps: list[str], outs: list[str]) -> SimpleNamespace:
        return SimpleNamespace(name=name, cmd=cmd, deps=[SimpleNamespace(def_path=d) for d in deps],
                               outs=[SimpleNamespace(def_path=o) for o in outs])  # fmt: skip

    # listed downstream first and run two at a time: without the wait, `down` would start with `up/` missing
    down = stage("down@0", "test -f up/model.pt && touch down.txt", ["up/model.pt"], ["down.txt"])
    up = stage("up", "sleep 1 && mkdir -p up && touch up/model.pt", ["params.yaml"], ["up/model.pt"])
    alone = stage("alone", "touch alone.txt", ["params.yaml"], ["alone.txt"])
    folder = stage("folder@0", "test -f up/model.pt && touch folder.txt", ["up"], ["folder.txt"])  # reads all of up/
    rerun_stages(tmp_path, [down, folder, up, alone], jobs=2)
    assert all((tmp_path / f).exists() for f in ("up/model.pt", "down.txt", "folder.txt", "alone.txt"))
    loop = stage("loop", "true", ["down.txt"], ["up/model.pt"])  # writes what `down` reads, and reads its output
    with pytest.raises(ValueError, match="feed each other"):
        rerun_stages(tmp_path, [down, loop], jobs=2)
