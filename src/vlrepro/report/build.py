"""Build ``REPORT.md``, ``report.html``, ``claims.csv`` and ``gates.csv`` from the metrics JSON files of every stage.

Everything is computed in memory first and written only when all of it succeeded, each file atomically,
so a bad input leaves the previous report untouched. Output is deterministic: inputs are read in sorted
order, tables are sorted, there are no timestamps or absolute paths, and PNGs carry no metadata.

Files written under ``out_dir``: ``REPORT.md``, ``report.html`` (figures embedded as base64 PNG, no
external CSS/JS), ``claims.csv``, ``gates.csv`` (the learning gates the claims depend on) and
``report_figures/<stage>.png`` (the figures REPORT.md links to).
A stage's own figures, ``<stage>_*.png`` in ``stage_figures_dir`` (e.g. the pretrain stage's learning
curve), are shown under that stage's table, linked in place rather than copied.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from vlrepro.io import atomic_write_bytes, atomic_write_text
from vlrepro.report.claims import VERDICTS, claims_ledger, ledger_csv
from vlrepro.report.collect import (
    NO_VARIANT,
    Collection,
    MetricsError,
    collect,
    ordered_stages,
    prefix_key,
    prefix_label,
    split_metric,
    summarize,
)
from vlrepro.report.figures import select_metrics, stage_figure
from vlrepro.report.gates import evaluate_gates, gates_csv
from vlrepro.report.references import PAPERS, Reference, load_references
from vlrepro.report.render import Block, Bullets, Heading, Image, Table, Text, to_html, to_markdown

FIGURES_DIR = "report_figures"


def fmt(x: float) -> str:
    """4 significant digits (plain integers for large values); '—' for a missing number."""
    if x is None or math.isnan(x):
        return "—"
    x = float(x) + 0.0  # turns -0.0 into 0.0
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


def mean_std(mean: float, std: float) -> str:
    return fmt(mean) if std is None or math.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def _runs(collection: Collection, stage: str) -> dict[str, list[int | None]]:
    """variant → sorted seeds of the stage's runs."""
    runs: dict[str, list[int | None]] = {}
    for f in collection.files:
        if f.stage == stage:
            runs.setdefault(f.variant, []).append(f.seed)
    return {v: sorted(seeds, key=lambda s: (s is None, s)) for v, seeds in sorted(runs.items())}


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


def _seed(seed: int | None) -> str:
    return "—" if seed is None else str(seed)


def _stage_hint(collection: Collection, stage: str) -> dict[str, Any] | None:
    hints = {json.dumps(f.figure, sort_keys=True): f.file for f in collection.files if f.stage == stage and f.figure}
    if len(hints) > 1:
        raise MetricsError(f"stage {stage!r}: files {sorted(hints.values())} carry different 'figure' hints")
    return json.loads(next(iter(hints))) if hints else None


def _figure_name(stage: str) -> str:
    return f"{FIGURES_DIR}/{re.sub(r'[^A-Za-z0-9_.-]', '_', stage)}.png"


def _method_note(alpha: float) -> Bullets:
    return Bullets(
        (
            'Our numbers ("Our results", "Learning gates", "Claims ledger") are read from the metrics JSON files '
            "the pipeline stages write under `reports/metrics/` (one file per stage run, each run recorded in "
            "`dvc.lock`); nothing in those sections is typed in by hand.",
            "Mean ± std are over seeds: sample standard deviation (ddof = 1); n = number of runs (seeds). "
            "A single run shows its value alone. Numbers are rounded to 4 significant digits.",
            "Stage tables: the metric `a.b.c` is the cell in row `a.b`, column `c` (its last component; "
            "`acc@0.5` counts as one component); a stage with variants has a row per variant. Rows and columns "
            "are sorted, rows component by component. `n` = runs of the row's variant; a cell from fewer runs "
            "gives its own n.",
            "Stage figures: bars = mean, error bars = ± 1 std over seeds (none for a single run). Quantities "
            "whose values all lie in [0, 1] share one x scale, so their bar lengths compare directly; any other "
            "quantity gets a panel and scale of its own.",
            "Claims: a one-sided t-test in the direction the paper claims — paired by seed when both variants ran "
            f"the same seeds, Welch's otherwise (the ledger's `test` column says which); alpha = {alpha:g}. "
            "Verdict `reproduced` if the difference goes the claimed way and p < alpha; `not reproduced` if the "
            "mean difference is zero or goes the other way; `inconclusive` if p ≥ alpha or a side has fewer "
            "than 2 seeds.",
            "Learning gates: a model that has not learned proves nothing, so a claim is `not testable` unless both "
            "of its variants pass every gate their stage defines for them, and have at least one. A gate compares "
            "a variant's mean metric over seeds with a bar set by a control that needs no learning (a random "
            "box, chance): `times` = margin × control, `plus` = control + margin, `min` = margin alone; it passes "
            "when the mean is ≥ the bar. The test still runs for a `not testable` claim and its numbers stay in "
            "the ledger. Also in `gates.csv`.",
            "Paper-reported numbers come from the package file `vlrepro/report/references.yaml`, each with its "
            "source. They are not produced by this pipeline and never enter our tables. Under the default "
            "profile our data is an embedded synthetic stand-in for the papers' benchmarks, so compare claims "
            "(variant vs variant), not absolute values.",
        )
    )


def _bar_text(rule: str, margin: float, bar: float) -> str:
    how = {"times": f"{fmt(margin)} × control", "plus": f"control + {fmt(margin)}", "min": "absolute"}[rule]
    return f"{fmt(bar)} ({how})"


def _gates_blocks(gates: pd.DataFrame, stages: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading("Learning gates")]
    if gates.empty:
        return [*blocks, Text("No stage has defined a learning gate yet, so every claim is `not testable`.")]
    n_passed = int(gates["passed"].sum())
    blocks.append(
        Text(
            f"{n_passed} of {len(gates)} gates passed. A claim is testable only if both its variants pass all "
            "of theirs. Value and control value are means over seeds. Also in `gates.csv`."
        )
    )
    for stage in stages:
        own = gates[gates["stage"] == stage]
        if own.empty:
            continue
        table = pd.DataFrame(
            {
                "variant": own["variant"],
                "metric": own["metric"],
                "value": [fmt(v) for v in own["value"]],
                "control": own["control"],
                "control value": [fmt(v) for v in own["control_value"]],
                "bar": [_bar_text(*r) for r in zip(own["rule"], own["margin"], own["bar"], strict=True)],
                "passed": own["passed"].map({True: "yes", False: "NO"}),
            }
        )
        blocks += [Heading(f"Gates of stage `{stage}`", 3), Table(table)]
    return blocks


def _claims_blocks(ledger: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [Heading("Claims ledger")]
    if ledger.empty:
        return [*blocks, Text("No stage has stated a claim yet.")]
    counts = Counter(ledger["verdict"])
    blocks.append(Text(", ".join(f"{v}: {counts.get(v, 0)}" for v in VERDICTS) + ". Also in `claims.csv`."))
    table = pd.DataFrame(
        {
            "paper": ledger["paper"],
            "claim": ledger["claim"],
            "stage": ledger["stage"],
            "metric": ledger["metric"] + ledger["higher_is_better"].map({True: " ↑", False: " ↓"}),
            "ours": ledger["variant"]
            + ": "
            + [mean_std(m, s) for m, s in zip(ledger.ours_mean, ledger.ours_std, strict=True)],
            "reference": ledger["reference_variant"]
            + ": "
            + [mean_std(m, s) for m, s in zip(ledger.reference_mean, ledger.reference_std, strict=True)],
            "seeds": ledger["n_ours"].astype(str) + " vs " + ledger["n_reference"].astype(str),
            "test": ledger["test"],
            "p": [fmt(p) for p in ledger["p_value"]],
            "verdict": ledger["verdict"],
            "gates": ledger["gates"],
        }
    )
    return [*blocks, Table(table)]


def _reference_blocks(refs: list[Reference]) -> list[Block]:
    blocks: list[Block] = [
        Heading("Paper-reported numbers"),
        Text(
            "Transcribed from the papers and their peers (not produced here), one table per paper. "
            "`—` in split: the source does not state it. Flags mark what we could not check; sources: docs/papers/."
        ),
    ]
    for paper in PAPERS:
        rows = [
            {
                "role": r.role,
                "method": r.method,
                "benchmark": r.benchmark,
                "split": r.split or "—",
                "metric": r.metric,
                "value": "not available" if r.value is None else mean_std(r.value, r.std),
                "unit": r.unit,
                "source": r.source,
                "flags": ", ".join(r.flags),
                "note": r.note or "",
            }
            for r in refs
            if r.paper == paper
        ]
        blocks.append(Heading(paper, 3))
        blocks.append(Table(pd.DataFrame(rows)) if rows else Text("No reported numbers on file."))
    return blocks


def _own_figures(stage: str, stage_figures_dir: Path | None, out_dir: Path) -> list[Image]:
    if stage_figures_dir is None:
        return []
    paths = sorted(Path(stage_figures_dir).glob(f"{stage}_*.png"))
    return [Image(Path(os.path.relpath(p, out_dir)).as_posix(), p.read_bytes(), p.stem) for p in paths]


def build_report(
    metrics_dir: Path, out_dir: Path, title: str, alpha: float, stage_figures_dir: Path | None = None
) -> dict[str, Any]:
    """Read every metrics JSON under ``metrics_dir`` and write the report files into ``out_dir``.

    Returns the written paths (``report_md``, ``report_html``, ``claims_csv``, ``gates_csv``, ``figures``),
    the ``stages`` found, the per-seed aggregate ``summary``, the ``gates`` and the ``claims`` ledger
    (DataFrames), and ``verdicts`` (verdict → count), for a notebook to display.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    metrics_dir, out_dir = Path(metrics_dir), Path(out_dir)
    collection = collect(metrics_dir)
    summary = summarize(collection.values)
    gates = evaluate_gates(collection)
    ledger = claims_ledger(collection, alpha, gates)
    refs = load_references()
    stages = ordered_stages({f.stage for f in collection.files})

    blocks: list[Block] = [Heading(title, 1), Heading("How these numbers were produced"), _method_note(alpha)]
    overview = []
    for stage in stages:
        runs = _runs(collection, stage)
        described = "; ".join(
            f"{'(no variant)' if v == NO_VARIANT else v}: seeds {', '.join(map(_seed, seeds))}"
            for v, seeds in runs.items()
        )
        overview.append(f"`{stage}`: {sum(map(len, runs.values()))} run(s); {described}")
    blocks += [Heading("Stages"), Bullets(tuple(overview)), Heading("Our results")]

    images: list[Image] = []
    for stage in stages:
        runs = _runs(collection, stage)
        blocks.append(Heading(f"Stage `{stage}`", 3))
        stage_summary = summary[summary["stage"] == stage]
        if stage_summary.empty:
            blocks.append(Text("This stage reported no metrics."))
            continue
        blocks.append(Table(stage_table(stage_summary, runs)))
        hint = _stage_hint(collection, stage)
        values = collection.values[collection.values["stage"] == stage]
        selected = select_metrics(values, hint, f"stage {stage!r}")
        fig_title = (hint or {}).get("title") or f"{stage}: mean ± std over seeds"
        image = Image(_figure_name(stage), stage_figure(selected, str(fig_title)), f"{stage} metrics")
        images.append(image)
        blocks += [image, *_own_figures(stage, stage_figures_dir, out_dir)]

    blocks += _gates_blocks(gates, stages)
    blocks += _claims_blocks(ledger)
    blocks += _reference_blocks(refs)

    markdown, html, csv, gate_csv = to_markdown(blocks), to_html(blocks, title), ledger_csv(ledger), gates_csv(gates)

    # Everything above can fail; nothing below should, so a failed build leaves the old report whole.
    figure_paths = [atomic_write_bytes(out_dir / img.path, img.png) for img in images]
    for stale in sorted((out_dir / FIGURES_DIR).glob("*.png")):
        if stale not in figure_paths:
            stale.unlink()
    paths = {
        "claims_csv": atomic_write_text(out_dir / "claims.csv", csv),
        "gates_csv": atomic_write_text(out_dir / "gates.csv", gate_csv),
        "report_md": atomic_write_text(out_dir / "REPORT.md", markdown),
        "report_html": atomic_write_text(out_dir / "report.html", html),
    }
    return {
        **paths,
        "figures": figure_paths,
        "stages": stages,
        "summary": summary,
        "gates": gates,
        "claims": ledger,
        "verdicts": {v: int((ledger["verdict"] == v).sum()) for v in VERDICTS},
    }
