"""The report's tables as DataFrames of ready-formatted strings (``render`` prints them as they are).

- :func:`stage_table`: every evaluation metric of a stage, pivoted for reading;
- :func:`evaluation_only`: which metrics belong in such a table (training losses and wall time do not: they
  live in the learning-curve figures and the summary);
- :func:`gates_table`, :func:`claims_table`: a paper's learning gates and claims, with effect sizes;
- :func:`main_table`: our numbers beside the paper's, each side marked.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from vlrepro.report.collect import NO_VARIANT, prefix_key, prefix_label, split_metric
from vlrepro.report.papers import MainTable
from vlrepro.report.references import Reference

TRAINING_PREFIX = "train"  # metrics under `train.` are the last training step's losses and counts
WALL_TIME = "seconds"  # a run's wall-clock time, in the summary rather than the tables
_COUNT = re.compile(r"^n(_|$)")  # sample sizes (`n`, `n_itm_pairs`): said once, not tabulated per variant


def fmt(x: float | None) -> str:
    """4 significant digits (plain integers for large values); '—' for a missing number."""
    if x is None or math.isnan(x):
        return "—"
    x = float(x) + 0.0  # turns -0.0 into 0.0
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


def mean_std(mean: float, std: float) -> str:
    return fmt(mean) if std is None or math.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def is_training(metric: str) -> bool:
    return metric.split(".")[0] == TRAINING_PREFIX or metric == WALL_TIME


def is_count(metric: str) -> bool:
    return bool(_COUNT.match(split_metric(metric)[1]))


def evaluation_only(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of a summary that are evaluation metrics: no training metrics, no wall time, no sample sizes."""
    keep = ~summary["metric"].map(is_training) & ~summary["metric"].map(is_count)
    return summary[keep]


def sample_sizes(values: pd.DataFrame) -> list[str]:
    """'`flickr.test`: n = 400, n_itm_pairs = 800' per prefix, from the count metrics of every run
    (``values``: one row per run and metric); a count that differs between runs shows its range."""
    counts = values[values["metric"].map(is_count) & ~values["metric"].map(is_training)]
    by_prefix: dict[str, dict[str, str]] = {}
    for metric, runs in counts.groupby("metric")["value"]:
        prefix, quantity = split_metric(metric)
        low, high = runs.min(), runs.max()
        by_prefix.setdefault(prefix, {})[quantity] = fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"
    return [
        f"`{prefix_label(p)}`: " + ", ".join(f"{q} = {v}" for q, v in sorted(by_prefix[p].items()))
        for p in sorted(by_prefix, key=prefix_key)
    ]


def stage_table(summary: pd.DataFrame, runs: dict[str, list[int | None]]) -> pd.DataFrame:
    """One stage's summary pivoted for reading: metric ``a.b.c`` is the cell at row ``a.b``, column ``c``.

    Rows are metric prefixes (``split_metric``), in :func:`prefix_key` order; a stage with variants has
    one row per (prefix, variant), variants sorted. Columns are the quantities (last components), sorted.
    Cells are 'mean ± std' (the value alone for one seed); an ``n`` column (runs of the row's variant)
    appears when some variant has several runs, and a cell built from fewer seeds than that says so, e.g.
    '0.71 ± 0.02 (n=2)'. A metric a row lacks is an empty cell.
    """
    parts = summary["metric"].map(split_metric)
    cells: dict[tuple[str, str, str], str] = {}
    for (prefix, quantity), r in zip(parts, summary.itertuples(), strict=True):
        n_runs = len(runs[r.variant])
        cells[prefix, r.variant, quantity] = mean_std(r.mean, r.std) + ("" if r.n == n_runs else f" (n={r.n})")
    prefixes = sorted({p for p, _ in parts}, key=prefix_key)
    quantities = sorted({q for _, q in parts})
    with_variants = set(runs) != {NO_VARIANT}
    with_n = any(len(seeds) > 1 for seeds in runs.values())

    rows = []
    for prefix in prefixes:
        for variant, seeds in runs.items():
            row = [cells.get((prefix, variant, q), "") for q in quantities]
            if any(row):
                rows.append(
                    [prefix_label(prefix)]
                    + ([variant] if with_variants else [])
                    + ([str(len(seeds))] if with_n else [])
                    + row
                )
    columns = ["metric"] + (["variant"] if with_variants else []) + (["n"] if with_n else []) + quantities
    return pd.DataFrame(rows, columns=columns)


def _bar_text(rule: str, margin: float, bar: float) -> str:
    how = {"times": f"{fmt(margin)} × control", "plus": f"control + {fmt(margin)}", "min": "absolute"}[rule]
    return f"{fmt(bar)} ({how})"


def gates_table(gates: pd.DataFrame) -> pd.DataFrame:
    """Learning gates for reading: the variant's mean, the control, the bar and whether it passed."""
    return pd.DataFrame(
        {
            "variant": gates["variant"],
            "metric": gates["metric"],
            "value": [fmt(v) for v in gates["value"]],
            "control": gates["control"],
            "control value": [fmt(v) for v in gates["control_value"]],
            "bar": [_bar_text(*r) for r in zip(gates["rule"], gates["margin"], gates["bar"], strict=True)],
            "passed": gates["passed"].map({True: "yes", False: "NO"}),
        }
    )


def _difference(d: float, low: float, high: float) -> str:
    if math.isnan(d):
        return "—"
    return f"{fmt(d)} [{fmt(low)}, {fmt(high)}]" if not math.isnan(low) else fmt(d)


def claims_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """Claim tests for reading: both variants' mean ± std, the difference with its 95 % interval, test, p and
    verdict. ``variant`` is the one the paper favours, ``compared with`` the one it should beat (with its
    metric when the claim compares two metrics of one model)."""
    arrow = ledger["higher_is_better"].map({True: " ↑", False: " ↓"})
    return pd.DataFrame(
        {
            "claim": ledger["claim"],
            "metric": ledger["metric"] + arrow,
            "variant": ledger["variant"]
            + ": "
            + [mean_std(m, s) for m, s in zip(ledger.ours_mean, ledger.ours_std, strict=True)],
            "compared with": ledger["reference_variant"]
            + [f" ({r})" if r != m else "" for r, m in zip(ledger.reference_metric, ledger.metric, strict=True)]
            + ": "
            + [mean_std(m, s) for m, s in zip(ledger.reference_mean, ledger.reference_std, strict=True)],
            "difference [95 % CI]": [
                _difference(*r) for r in zip(ledger.difference, ledger.ci_low, ledger.ci_high, strict=True)
            ],
            "seeds": ledger["n_ours"].astype(str) + " vs " + ledger["n_reference"].astype(str),
            "test": ledger["test"],
            "p": [fmt(p) for p in ledger["p_value"]],
            "verdict": ledger["verdict"],
            "gates": ledger["gates"],
        }
    )


def _paper_value(r: Reference) -> str:
    if r.value is None:
        return "not available"
    unit = {"%": " %", "fraction": "", "score": "", "M params": " M", "count": ""}[r.unit]
    return mean_std(r.value, r.std) + unit


def main_table(
    table: MainTable, paper: str, refs: list[Reference], summary: pd.DataFrame, ours_label: str
) -> pd.DataFrame:
    """Rows = the paper's methods, then our extra rows; per column, the paper's number (its real benchmark) and
    ours (mean ± std (n), headed ``ours_label``, e.g. 'ours (world)').

    The paper's side is looked up in ``refs`` by method, benchmark, split and metric; ours in ``summary`` by
    the table's stage, the row's variant and the column's metric. Missing on either side: '—'.
    """
    reported = {(r.method, r.benchmark, r.split, r.metric): r for r in refs if r.paper == paper}
    ours = {
        (r.variant, r.metric): f"{mean_std(r.mean, r.std)} (n={r.n})"
        for r in summary[summary["stage"] == table.stage].itertuples()
    }
    rows = []
    for method, variant in [*table.rows.items(), *table.extra_rows.items()]:
        row = {"paper's method": method, "our variant": variant or "—"}
        for col in table.columns:
            if col.metric is not None:  # a column only we have gets no paper side
                ref = reported.get((method, col.benchmark, col.split, col.metric))
                row[f"paper: {col.label()}"] = _paper_value(ref) if ref else "—"
            row[f"{ours_label}: {col.ours}"] = ours.get((variant, col.ours), "—")
        rows.append(row)
    return pd.DataFrame(rows)
