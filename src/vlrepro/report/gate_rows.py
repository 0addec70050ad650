"""The gate rows a stage writes into its metrics JSON, and the checks made when it writes them.

The row format and what a gate means are described in :mod:`vlrepro.report.gates`, which evaluates them for
the report. This module is apart so that writing a metrics file (``vlrepro.io.write_metrics``) needs neither
the report's code nor pandas: a pipeline stage that writes metrics depends on these few lines only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PAPERS: tuple[str, ...] = ("AMC", "SMCIM", "GLIP", "ALA", "BLIP")
Paper = Literal["AMC", "SMCIM", "GLIP", "ALA", "BLIP"]

RULES: tuple[str, ...] = ("times", "plus", "min")
Rule = Literal["times", "plus", "min"]


class GateError(ValueError):
    """A gate row that cannot be evaluated (malformed, or pointing at metrics that do not exist)."""


class GateRow(BaseModel):
    """The row format a stage writes into its metrics JSON (see :mod:`vlrepro.report.gates`)."""

    # strict: a quoted "2.0" or a misspelt key is an error rather than silently coerced or dropped
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    paper: Paper
    variant: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    control: str = Field(min_length=1)
    control_metric: str | None = Field(None, min_length=1)
    control_value: float | None = Field(None, allow_inf_nan=False)
    rule: Rule
    margin: float = Field(allow_inf_nan=False)


def parse_gate_row(raw: Any, where: str) -> GateRow:
    """Validate one raw gate row; ``where`` (file and ``gates[i]``) starts every error message."""
    try:
        row = GateRow.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(row)"
        raise GateError(f"{where}: field '{field}': {err['msg']}") from None
    given = [k for k in ("control_metric", "control_value") if getattr(row, k) is not None]
    if len(given) != 1:
        got = "both" if given else "neither"
        raise GateError(f"{where}: give exactly one of 'control_metric' and 'control_value' (got {got})")
    return row


def _names(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        out |= _names(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return out


def check_gates(rows: list[Any], path: str, variant: str | None, metrics: dict[str, Any]) -> None:
    """The checks a stage can make when it writes its metrics file (``vlrepro.io.write_metrics``).

    Catching a typo here fails the stage's own tests instead of the report after every run has finished.
    Only rows about the file's own variant can be checked against metric names; the others are checked by
    the report, which sees every run.
    """
    if not isinstance(rows, list):
        raise GateError(f"{path}: 'gates' must be a list of gate rows (mappings)")
    names = _names(metrics)
    for i, raw in enumerate(rows):
        where = f"{path}: gates[{i}]"
        row = parse_gate_row(raw, where)
        if row.variant != variant:
            continue
        for key in ("metric", "control_metric"):
            name = getattr(row, key)
            if name is not None and name not in names:
                raise GateError(f"{where}: {key} {name!r} not found in this file's metrics")
