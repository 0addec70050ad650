"""Learning gates on hand-made metrics files (2 variants × 3 seeds): the bar of each rule, pass/fail, and what
a failing or missing gate does to a claim that the t-test alone would call reproduced."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest

from vlrepro.io import write_json, write_metrics
from vlrepro.report import GATE_COLUMNS, build_report
from vlrepro.report.claims import NOT_TESTABLE, REPRODUCED, VERDICTS, claims_ledger
from vlrepro.report.collect import collect
from vlrepro.report.gate_rows import GateError
from vlrepro.report.gates import evaluate_gates

ACC, RANDOM = "refcoco.val.acc@0.5", "refcoco.val.random_object_acc@0.5"
# variant → seed → (acc, random-object acc); full beats transformer by 0.10–0.12 at every seed
RUNS = {
    "full": {0: (0.60, 0.20), 1: (0.62, 0.21), 2: (0.64, 0.22)},
    "transformer": {0: (0.50, 0.20), 1: (0.51, 0.21), 2: (0.52, 0.22)},
}
CLAIM = {
    "paper": "SMCIM",
    "claim": "the full model beats the transformer ablation",
    "metric": ACC,
    "variant": "full",
    "reference_variant": "transformer",
    "higher_is_better": True,
}


def gate(variant="full", rule="times", margin=2.0, **control):
    control = control or {"control_metric": RANDOM}
    return {"paper": "SMCIM", "variant": variant, "metric": ACC, "control": "random scene object's box",
            "rule": rule, "margin": margin, **control}  # fmt: skip


def metrics(acc, random):
    return {"refcoco": {"val": {"acc@0.5": acc, "random_object_acc@0.5": random}}}


def write_runs(root, gates, claims=(CLAIM,)):
    """Every seed file carries the same claims and gates, as a matrix stage writes them."""
    for variant, seeds in RUNS.items():
        for seed, (acc, random) in seeds.items():
            path = root / "smcim" / f"{variant}-{seed}.json"
            write_metrics(path, "smcim", metrics(acc, random), variant, seed, claims=list(claims), gates=gates)
    return root


def mean(variant, i):
    return statistics.mean(r[i] for r in RUNS[variant].values())


# --- the bar of each rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "margin", "expected_bar", "passed"),
    [
        ("times", 2.0, 2.0 * 0.21, True),  # 0.62 ≥ 0.42
        ("times", 3.0, 3.0 * 0.21, False),  # 0.62 < 0.63
        ("plus", 0.4, 0.21 + 0.4, True),  # 0.62 ≥ 0.61
        ("plus", 0.5, 0.21 + 0.5, False),  # 0.62 < 0.71
        ("min", 0.6, 0.6, True),  # absolute; the control is shown but does not move the bar
        ("min", 0.65, 0.65, False),
    ],
)
def test_bar_of_each_rule_from_a_control_metric(tmp_path, rule, margin, expected_bar, passed):
    gates = evaluate_gates(collect(write_runs(tmp_path, [gate(rule=rule, margin=margin)])))
    assert list(gates.columns) == GATE_COLUMNS
    assert len(gates) == 1  # six files carry the row; it counts once
    row = gates.iloc[0]
    assert (row["paper"], row["variant"], row["metric"], row["stage"]) == ("SMCIM", "full", ACC, "smcim")
    assert row["value"] == pytest.approx(mean("full", 0)) == pytest.approx(0.62)
    assert row["control_value"] == pytest.approx(mean("full", 1)) == pytest.approx(0.21)
    assert row["bar"] == pytest.approx(expected_bar)
    assert bool(row["passed"]) is passed
    assert (row["rule"], row["margin"], row["n_seeds"], row["control"]) == (
        rule, margin, 3, "random scene object's box",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "margin", "expected_bar", "passed"),
    [("times", 1.2, 0.6, True), ("plus", 0.15, 0.65, False), ("min", 0.55, 0.55, True)],
)
def test_bar_of_each_rule_from_a_constant_control(tmp_path, rule, margin, expected_bar, passed):
    g = gate(rule=rule, margin=margin, control_value=0.5)  # e.g. chance for a binary matching accuracy
    row = evaluate_gates(collect(write_runs(tmp_path, [g]))).iloc[0]
    assert (row["value"], row["control_value"], row["bar"]) == pytest.approx((0.62, 0.5, expected_bar))
    assert bool(row["passed"]) is passed and row["n_seeds"] == 3


def test_value_equal_to_the_bar_passes(tmp_path):
    for seed, acc in enumerate((0.25, 0.5, 0.75)):  # binary fractions: the mean is exactly 0.5
        write_metrics(tmp_path / f"full-{seed}.json", "smcim", metrics(acc, 0.25), "full", seed, gates=[gate()])
    row = evaluate_gates(collect(tmp_path)).iloc[0]
    assert (row["value"], row["bar"]) == (0.5, 0.5) and bool(row["passed"])


def test_n_seeds_is_the_smaller_run_count(tmp_path):
    write_runs(tmp_path, [gate()])
    path = tmp_path / "smcim" / "full-2.json"
    write_metrics(path, "smcim", {"refcoco": {"val": {"acc@0.5": 0.64}}}, "full", 2)  # the other seeds state the gate
    row = evaluate_gates(collect(tmp_path)).iloc[0]
    assert row["n_seeds"] == 2
    assert row["control_value"] == pytest.approx(0.205)  # seeds 0 and 1 only
    assert row["value"] == pytest.approx(0.62)  # all three seeds


def test_rows_sorted_and_one_per_gate(tmp_path):
    gates = [gate("transformer"), gate("full"), gate("full", control_value=0.5) | {"control": "chance"}]
    out = evaluate_gates(collect(write_runs(tmp_path, gates)))
    assert list(zip(out["variant"], out["control"], strict=True)) == [
        ("full", "chance"), ("full", "random scene object's box"), ("transformer", "random scene object's box"),
    ]  # fmt: skip


def test_no_gates_gives_an_empty_frame_with_the_columns(tmp_path):
    out = evaluate_gates(collect(write_runs(tmp_path, None)))
    assert out.empty and list(out.columns) == GATE_COLUMNS


# --- what gates do to a claim -----------------------------------------------------------------------------


def ledger_row(root, alpha=0.05) -> pd.Series:
    ledger = claims_ledger(collect(root), alpha)
    assert len(ledger) == 1
    return ledger.iloc[0]


def test_passing_gates_leave_the_t_test_verdict(tmp_path):
    row = ledger_row(write_runs(tmp_path, [gate("full"), gate("transformer")]))  # bars 0.42: both pass
    assert row["verdict"] == REPRODUCED and row["gates"] == "passed"
    assert row["test"].startswith("paired t-test") and row["p_value"] < 0.01


def test_a_failing_gate_makes_a_reproduced_claim_not_testable(tmp_path):
    passing = ledger_row(write_runs(tmp_path / "pass", [gate("full"), gate("transformer")]))
    # 3 × 0.21 = 0.63 > transformer's 0.51: that variant has not learned enough for the claim to mean anything
    failing = ledger_row(write_runs(tmp_path / "fail", [gate("full"), gate("transformer", margin=3.0)]))
    assert passing["verdict"] == REPRODUCED
    assert failing["verdict"] == NOT_TESTABLE
    assert failing["gates"] == f"failed: transformer ({ACC} 0.51 < bar 0.63)"
    # the statistics stay in the row for the reader
    for column in ("ours_mean", "ours_std", "reference_mean", "reference_std", "n_seeds", "test", "p_value"):
        assert failing[column] == passing[column], column
    assert failing["ours_mean"] == pytest.approx(0.62) and failing["p_value"] < 0.01


def test_both_variants_failing_are_both_named(tmp_path):
    row = ledger_row(write_runs(tmp_path, [gate("full", rule="min", margin=0.9), gate("transformer", margin=3.0)]))
    assert row["verdict"] == NOT_TESTABLE
    assert row["gates"] == f"failed: full ({ACC} 0.62 < bar 0.9); failed: transformer ({ACC} 0.51 < bar 0.63)"


def test_one_failing_gate_of_several_is_enough(tmp_path):
    gates = [gate("full"), gate("transformer"), gate("transformer", control_value=0.5) | {"control": "chance"}]
    row = ledger_row(write_runs(tmp_path, gates))  # transformer passes 2 × random (0.42) but not 2 × 0.5
    assert row["verdict"] == NOT_TESTABLE and row["gates"] == f"failed: transformer ({ACC} 0.51 < bar 1)"


def test_a_variant_without_a_gate_is_not_testable(tmp_path):
    row = ledger_row(write_runs(tmp_path, [gate("full")]))
    assert row["verdict"] == NOT_TESTABLE and row["gates"] == "none defined for transformer"
    row = ledger_row(write_runs(tmp_path / "none", None))
    assert row["verdict"] == NOT_TESTABLE
    assert row["gates"] == "none defined for full; none defined for transformer"


def test_gates_of_another_stage_do_not_count(tmp_path):
    write_runs(tmp_path, [gate("full")])
    # a stage that happens to use the same variant name and metric
    write_metrics(tmp_path / "other.json", "other", metrics(0.9, 0.1), "transformer", 0, gates=[gate("transformer")])
    row = ledger_row(tmp_path)
    assert row["verdict"] == NOT_TESTABLE and row["gates"] == "none defined for transformer"


def test_not_testable_is_a_verdict_and_counted_by_the_report(tmp_path):
    assert NOT_TESTABLE in VERDICTS
    metrics_dir = write_runs(tmp_path / "m", [gate("full"), gate("transformer", margin=3.0)])
    result = build_report(metrics_dir, tmp_path / "out", "t", 0.05)
    assert result["verdicts"] == {"reproduced": 0, "not reproduced": 0, "inconclusive": 0, "not testable": 1}
    assert list(pd.read_csv(tmp_path / "out" / "gates.csv")["passed"]) == [True, False]
    md = (tmp_path / "out" / "REPORT.md").read_text()
    smcim = md[md.index("\n## SMCIM\n") : md.index("\n## GLIP\n")]
    gates_md = smcim[smcim.index("### Did the models learn?") : smcim.index("### Claims")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in gates_md.splitlines() if line.startswith("|")]
    assert rows[0] == ["variant", "metric", "value", "control", "control value", "bar", "passed"]
    assert rows[2:] == [
        ["full", ACC, "0.62", "random scene object's box", "0.21", "0.42 (2 × control)", "yes"],
        ["transformer", ACC, "0.51", "random scene object's box", "0.21", "0.63 (3 × control)", "NO"],
    ]
    assert "Learning gates passed: 1 of 2." in smcim and "0 reproduced" in smcim and "1 not testable" in smcim
    claims_md = smcim[smcim.index("### Claims") :]
    assert "| not testable " in claims_md and "failed: transformer" in claims_md
    assert "Variants below a learning gate: transformer" in smcim  # said again among the caveats


# --- malformed rows: an error naming the file and the key -------------------------------------------------


def write_raw(root, rows):
    """The runs with ``rows`` written by hand into full-0.json, past write_metrics' own checks."""
    write_runs(root, [gate("full"), gate("transformer")])
    doc = {"stage": "smcim", "variant": "full", "seed": 0, "metrics": metrics(0.60, 0.20), "gates": rows}
    (root / "smcim" / "full-0.json").write_text(json.dumps(doc))  # json.dumps lets an infinite number through
    return root


MALFORMED = [
    (gate(rule="double"), r"field 'rule': Input should be 'times', 'plus' or 'min'"),
    (
        gate(control_metric=RANDOM, control_value=0.5),
        "give exactly one of 'control_metric' and 'control_value' .got both",
    ),
    ({k: v for k, v in gate().items() if k != "control_metric"}, "give exactly one of .* .got neither"),
    ({k: v for k, v in gate().items() if k != "margin"}, "field 'margin': Field required"),
    (gate(margin="2"), "field 'margin': Input should be a valid number"),
    (gate() | {"paper": "XYZ"}, "field 'paper'"),
    (gate() | {"stage": "amc"}, "field 'stage': Extra inputs are not permitted"),
    (gate(control_value=float("inf")), "field 'control_value'"),
]


@pytest.mark.parametrize(("row", "message"), MALFORMED)
def test_malformed_row_names_file_and_key_in_the_report(tmp_path, row, message):
    root = write_raw(tmp_path, [gate(), row])
    with pytest.raises(GateError, match=rf"smcim/full-0\.json: gates\[1\]: {message}"):
        evaluate_gates(collect(root))


@pytest.mark.parametrize(("row", "message"), [m for m in MALFORMED if m[0].get("control_value") != float("inf")])
def test_malformed_row_is_refused_when_written(tmp_path, row, message):
    path = tmp_path / "full-0.json"
    with pytest.raises(GateError, match=rf"full-0\.json: gates\[0\]: {message}"):
        write_metrics(path, "smcim", metrics(0.6, 0.2), "full", 0, gates=[row])
    assert not path.exists()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (gate("transformer") | {"metric": "refcoco.val.acc"}, "metric 'refcoco.val.acc' not found"),
        (
            gate("transformer", control_metric="refcoco.val.random") | {"control": "random box"},
            "control_metric 'refcoco.val.random' not found",
        ),
        (gate("nobody"), "metric 'refcoco.val.acc@0.5' not found for variant 'nobody'.*variants there: full, transf"),
    ],
)
def test_metric_not_found_names_file_and_key(tmp_path, row, message):
    # a row about another variant passes write_metrics (it cannot see that variant's metrics); the report fails
    write_runs(tmp_path, [gate("full"), gate("transformer")])
    write_metrics(tmp_path / "smcim" / "full-0.json", "smcim", metrics(0.6, 0.2), "full", 0, gates=[gate(), row])
    with pytest.raises(GateError, match=rf"smcim/full-0\.json: gates\[1\]: {message}"):
        build_report(tmp_path, tmp_path / "out", "t", 0.05)
    assert not (tmp_path / "out").exists()


def test_metric_of_the_files_own_variant_is_checked_when_written(tmp_path):
    path = tmp_path / "full-0.json"
    with pytest.raises(GateError, match=r"full-0\.json: gates\[0\]: control_metric 'refcoco.val.rnd' not found"):
        write_metrics(path, "smcim", metrics(0.6, 0.2), "full", 0, gates=[gate(control_metric="refcoco.val.rnd")])
    assert not path.exists()


def test_conflicting_copies_are_an_error(tmp_path):
    write_runs(tmp_path, [gate("full")])
    write_metrics(tmp_path / "smcim" / "full-0.json", "smcim", metrics(0.6, 0.2), "full", 0, gates=[gate(margin=3.0)])
    with pytest.raises(GateError, match=r"gates\[0\] contradicts the same gate in smcim/full-0\.json: gates\[0\]"):
        evaluate_gates(collect(tmp_path))


def test_two_rules_on_one_metric_are_two_gates(tmp_path):
    write_runs(tmp_path, [gate("full"), gate("full", rule="min", margin=0.5)])
    rows = evaluate_gates(collect(tmp_path))
    full = rows[rows["variant"] == "full"].set_index("rule")
    assert sorted(full.index) == ["min", "times"]
    assert full.loc["min", "bar"] == pytest.approx(0.5)
    assert full.loc["times", "bar"] == pytest.approx(2 * full.loc["times", "control_value"])


def test_gates_must_be_a_list_of_rows(tmp_path):
    write_runs(tmp_path, None)
    doc = {"stage": "smcim", "variant": "full", "seed": 0, "metrics": metrics(0.6, 0.2), "gates": {"rule": "min"}}
    write_json(tmp_path / "smcim" / "full-0.json", doc)
    with pytest.raises(ValueError, match=r"full-0\.json: 'gates' must be a list"):
        collect(tmp_path)


def test_a_claim_whose_variant_has_not_run_yet_is_not_testable(tmp_path):
    # a matrix finished in part: the claim row names a variant without files; the ledger still builds
    from vlrepro.io import write_metrics
    from vlrepro.report.claims import NOT_TESTABLE, claims_ledger
    from vlrepro.report.collect import collect

    claim = {"paper": "SMCIM", "claim": "x beats y", "metric": "acc", "variant": "x", "reference_variant": "y",
             "higher_is_better": True}
    gate = {"paper": "SMCIM", "variant": "x", "metric": "acc", "control": "chance", "control_value": 0.1,
            "rule": "min", "margin": 0.2}
    for seed in range(3):
        write_metrics(tmp_path / "smcim" / f"x-{seed}.json", "smcim", {"acc": 0.5 + seed / 100}, variant="x",
                      seed=seed, claims=[claim], gates=[gate])
    row = claims_ledger(collect(tmp_path), 0.05).iloc[0]
    assert row["verdict"] == NOT_TESTABLE and row["gates"] == "no runs of y yet" and row["n_seeds"] == 0
    # a stage that could not train (GLIP's student on real data) records a file without numbers
    write_metrics(tmp_path / "smcim" / "y-0.json", "smcim", {}, variant="y", seed=0, claims=[claim])
    row = claims_ledger(collect(tmp_path), 0.05).iloc[0]
    assert row["verdict"] == NOT_TESTABLE and row["gates"] == "y recorded no metrics (not run)"
    other = claim | {"claim": "z beats y", "variant": "z"}  # z has not run yet, y could not train
    write_metrics(tmp_path / "smcim" / "y-1.json", "smcim", {}, variant="y", seed=1, claims=[other])
    rows = claims_ledger(collect(tmp_path), 0.05).set_index("claim")
    assert rows.loc["z beats y", "gates"] == "no runs of z yet; y recorded no metrics (not run)"
