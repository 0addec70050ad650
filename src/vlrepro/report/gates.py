"""Learning gates: the evidence that a trained variant learned something, which a claim about it needs.

A claim compares two trained variants (:mod:`vlrepro.report.claims`). If neither has learned the task, the
t-test only compares two kinds of noise, and a "reproduced" or "not reproduced" verdict would say nothing
about the paper. A gate states what learning means for one variant: its metric must clear a bar set by a
control that needs no learning (a random box, chance level, an untrained model).

Gate rows
---------
A stage states its gates in the optional ``"gates"`` list of its metrics JSON
(``vlrepro.io.write_metrics(..., gates=[...])``), next to its claims and in the same spirit: a row names what
to compare, never the numbers::

    {"paper": "SMCIM", "variant": "full", "metric": "refcoco.val.acc@0.5",
     "control": "random scene object's box", "control_metric": "refcoco.val.random_object_acc@0.5",
     "rule": "times", "margin": 2.0}

- ``metric`` and ``control_metric`` are dotted metric names of that variant in the same stage's files (the
  stage of the file carrying the row); instead of ``control_metric`` a row may give a constant
  ``control_value`` (e.g. chance, 0.5 for image-text matching accuracy), exactly one of the two;
- ``control`` says in words what the control is, for the reader;
- ``rule`` sets the bar: ``"times"`` → margin × control, ``"plus"`` → control + margin, ``"min"`` → margin
  (absolute; the control is then shown for reference only). A relative rule is the natural one when the
  control is a measured baseline; ``"min"`` suits a bar that does not scale with the control.

The gate passes when the mean over seeds of ``metric`` is ≥ the bar, the control being the mean over seeds
of ``control_metric`` (or the constant). Means, not every seed: a claim is decided on means over seeds too.
Like claims, every seed file may carry the same row; identical rows count once, conflicting copies (same
stage, paper, variant, metric, control and rule, different margin or control) are an error. One variant may
hold two bars on the same metric and control under different rules (an absolute bar and a multiple of the
control: GLIP's AP50 ≥ 0.60 and ≥ 3 × an untrained head's); each is a row of ``gates.csv``.

``gates.csv`` has one row per gate in :data:`GATE_COLUMNS` order; ``n_seeds`` is the number of runs behind
the mean (the smaller of the metric's and the control metric's run counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vlrepro.report.collect import Collection, ordered_stages
from vlrepro.report.gate_rows import RULES, GateError, GateRow, parse_gate_row

GATE_COLUMNS: list[str] = [
    "paper", "variant", "metric", "value", "control", "control_value", "bar", "passed",
    "stage", "rule", "margin", "n_seeds",
]  # fmt: skip


@dataclass(frozen=True)
class Gate:
    stage: str
    row: GateRow
    where: str  # 'file: gates[i]' of the first copy, for error messages


def bar(rule: str, margin: float, control_value: float) -> float:
    """The value a variant's metric must reach under ``rule``."""
    if rule == "times":
        return margin * control_value
    if rule == "plus":
        return control_value + margin
    if rule == "min":
        return margin
    raise ValueError(f"unknown gate rule {rule!r}; expected one of {', '.join(RULES)}")


def gate_rows(collection: Collection) -> list[Gate]:
    """Every distinct gate row of the collection, sorted; malformed rows and conflicting copies are errors."""
    found: dict[tuple, Gate] = {}
    for f in collection.files:
        for i, raw in enumerate(f.gates):
            where = f"{f.file}: gates[{i}]"
            row = parse_gate_row(raw, where)
            key = (f.stage, row.paper, row.variant, row.metric, row.control, row.rule)
            if key in found and found[key].row != row:
                raise GateError(f"{where} contradicts the same gate in {found[key].where}")
            found.setdefault(key, Gate(f.stage, row, where))
    order = {s: i for i, s in enumerate(ordered_stages({k[0] for k in found}))}
    return [found[k] for k in sorted(found, key=lambda k: (order[k[0]], *k[1:]))]


def evaluate_gates(collection: Collection) -> pd.DataFrame:
    """Evaluate every gate of the collection; one row per gate in ``GATE_COLUMNS`` order (stages in
    pipeline order, then paper, variant, metric, control)."""
    per_seed = {key: group["value"] for key, group in collection.values.groupby(["stage", "variant", "metric"])}

    def runs(gate: Gate, metric: str, key: str) -> pd.Series:
        values = per_seed.get((gate.stage, gate.row.variant, metric))
        if values is None:
            variants = sorted({f.variant for f in collection.files if f.stage == gate.stage})
            raise GateError(
                f"{gate.where}: {key} {metric!r} not found for variant {gate.row.variant!r} in stage "
                f"{gate.stage!r}; variants there: {', '.join(variants)}"
            )
        return values

    rows = []
    for gate in gate_rows(collection):
        row = gate.row
        values = runs(gate, row.metric, "metric")
        if row.control_metric is not None:
            controls = runs(gate, row.control_metric, "control_metric")
            control_value, n_seeds = float(controls.mean()), min(len(values), len(controls))
        else:
            control_value, n_seeds = float(row.control_value), len(values)
        value, threshold = float(values.mean()), bar(row.rule, row.margin, control_value)
        rows.append(
            {
                "paper": row.paper,
                "variant": row.variant,
                "metric": row.metric,
                "value": value,
                "control": row.control,
                "control_value": control_value,
                "bar": threshold,
                "passed": bool(value >= threshold),
                "stage": gate.stage,
                "rule": row.rule,
                "margin": row.margin,
                "n_seeds": n_seeds,
            }
        )
    return pd.DataFrame(rows, columns=GATE_COLUMNS).astype({"passed": bool, "n_seeds": "int64"})


def _num(x: float) -> str:
    return f"{float(x) + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0


def gate_verdict(gates: pd.DataFrame, stage: str, variants: tuple[str, ...]) -> tuple[bool, str]:
    """Whether every variant has gates in ``stage`` and passes them all, and a short text saying so:
    ``passed``, or e.g. ``failed: transformer (refcoco.val.acc@0.5 0.21 < bar 0.48); none defined for full``."""
    problems = []
    for variant in variants:
        own = gates[(gates["stage"] == stage) & (gates["variant"] == variant)]
        if own.empty:
            problems.append(f"none defined for {variant}")
            continue
        failed = own[~own["passed"]]
        if not failed.empty:
            why = "; ".join(f"{r.metric} {_num(r.value)} < bar {_num(r.bar)}" for r in failed.itertuples())
            problems.append(f"failed: {variant} ({why})")
    return (not problems, "; ".join(problems) or "passed")


def gates_csv(gates: pd.DataFrame) -> str:
    """The gates as CSV text; 6 significant digits so the file is stable across platforms."""
    return gates.to_csv(index=False, float_format="%.6g", lineterminator="\n")
