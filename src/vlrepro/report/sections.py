"""The report's sections as blocks, in reading order: summary, one section per paper, appendices.

A reader comes with one question per paper: which claims hold here, how sure are we, and how do our numbers
sit beside the paper's. So the report opens with a summary row per paper, then gives every paper the same
section — what it claims, whether its models learned (gates), the claims with effect sizes, our main table
beside the paper's, figures, all evaluation metrics, caveats — and leaves the data, the pre-training, the
method notes and the paper-reported numbers to appendices.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vlrepro.report.claims import NOT_TESTABLE, VERDICTS
from vlrepro.report.collect import NO_VARIANT, Collection, MetricsError
from vlrepro.report.figures import select_metrics, stage_figure
from vlrepro.report.papers import PaperCard, missing_metrics
from vlrepro.report.references import PAPERS, Reference
from vlrepro.report.render import Block, Bullets, Heading, Image, Table, Text
from vlrepro.report.tables import (
    WALL_TIME,
    claims_table,
    evaluation_only,
    gates_table,
    main_table,
    mean_std,
    sample_sizes,
    stage_table,
)

FIGURES_DIR = "report_figures"


@dataclass(frozen=True)
class Inputs:
    """Everything the sections are built from, computed once by ``build_report``."""

    collection: Collection
    summary: pd.DataFrame  # per (stage, variant, metric): mean, std, n over seeds
    gates: pd.DataFrame
    ledger: pd.DataFrame
    refs: list[Reference]
    cards: dict[str, PaperCard]
    profile: str
    alpha: float
    stage_figures_dir: Path | None
    out_dir: Path
    plots_dir: Path | None = None  # the `dvc plots` files: a paper's learning curves, <stage>_curves.json


def runs_of(collection: Collection, stage: str) -> dict[str, list[int | None]]:
    """variant → sorted seeds of the stage's runs."""
    runs: dict[str, list[int | None]] = {}
    for f in collection.files:
        if f.stage == stage:
            runs.setdefault(f.variant, []).append(f.seed)
    return {v: sorted(seeds, key=lambda s: (s is None, s)) for v, seeds in sorted(runs.items())}


def _stages_present(inputs: Inputs, stages: list[str]) -> list[str]:
    present = {f.stage for f in inputs.collection.files}
    return [s for s in stages if s in present]


def _wall_time(inputs: Inputs, stages: list[str]) -> str:
    values = inputs.collection.values
    seconds = values[values["stage"].isin(stages) & (values["metric"] == WALL_TIME)]["value"]
    if seconds.empty:
        return "not recorded"
    return f"{seconds.sum() / 60:.0f} min of training over {len(seconds)} runs"


def _gates_passed(gates: pd.DataFrame) -> str:
    return f"{int(gates['passed'].sum())} of {len(gates)}" if len(gates) else "none defined"


def summary_blocks(inputs: Inputs) -> list[Block]:
    rows = []
    for paper, card in inputs.cards.items():
        ledger = inputs.ledger[inputs.ledger["paper"] == paper]
        counts = Counter(ledger["verdict"])
        stages = _stages_present(inputs, card.stages)
        rows.append(
            {
                "paper": paper,
                **{verdict: str(counts.get(verdict, 0)) for verdict in VERDICTS},
                "learning gates passed": _gates_passed(inputs.gates[inputs.gates["paper"] == paper]),
                "profile and data": f"{inputs.profile}: {card.data_for(inputs.profile)}",
                "wall time": _wall_time(inputs, stages) if stages else "no runs yet",
            }
        )
    return [
        Heading("Summary"),
        Text(
            "One row per paper: how many of its claim tests (rows of the claims ledger: one claim may be tested "
            "on several metrics or against several variants) our runs reproduce, do not reproduce, leave "
            "inconclusive, or cannot test because a compared model did not pass its learning gate; how many "
            "learning gates passed; the data; and the wall time where the runs record it. Verdicts come from "
            f"one-sided t-tests over seeds at alpha = {inputs.alpha:g} (Appendix: how these numbers were produced)."
        ),
        Table(pd.DataFrame(rows), id="summary-table"),
    ]


def _figure_name(stage: str) -> str:
    return f"{FIGURES_DIR}/{re.sub(r'[^A-Za-z0-9_.-]', '_', stage)}.png"


def stage_hint(collection: Collection, stage: str) -> dict[str, Any] | None:
    """The stage's ``figure`` hint; files of one stage that carry different hints are an error."""
    hints = {json.dumps(f.figure, sort_keys=True): f.file for f in collection.files if f.stage == stage and f.figure}
    if len(hints) > 1:
        raise MetricsError(f"stage {stage!r}: files {sorted(hints.values())} carry different 'figure' hints")
    return json.loads(next(iter(hints))) if hints else None


def stage_figure_image(inputs: Inputs, stage: str) -> Image | None:
    """A bar chart (mean ± std over seeds) of the metrics a stage's claims compare, or of all its evaluation
    metrics when it states no claim (data, pre-training); a stage's ``figure`` hint overrides the choice."""
    values = inputs.collection.values
    values = values[values["stage"] == stage]
    values = values[values["metric"].isin(evaluation_only(values)["metric"])]
    if values.empty:
        return None
    hint = stage_hint(inputs.collection, stage)
    claimed = sorted(set(inputs.ledger.loc[inputs.ledger["stage"] == stage, "metric"]) & set(values["metric"]))
    if hint is None and claimed:
        hint = {"metrics": claimed, "title": f"{stage}: the metrics its claims compare, mean ± std over seeds"}
    selected = select_metrics(values, hint, f"stage {stage!r}")
    title = (hint or {}).get("title") or f"{stage}: evaluation metrics, mean ± std over seeds"
    return Image(_figure_name(stage), stage_figure(selected, str(title)), f"{stage} metrics")


def own_figures(inputs: Inputs, stages: list[str]) -> list[Image]:
    """The stages' own figures (``<stage>_*.png`` in the stage figures folder), linked where they are."""
    if inputs.stage_figures_dir is None:
        return []
    folder = Path(inputs.stage_figures_dir)
    paths = sorted({p for stage in stages for p in folder.glob(f"{stage}_*.png")})
    return [Image(Path(os.path.relpath(p, inputs.out_dir)).as_posix(), p.read_bytes(), p.stem) for p in paths]


def curve_blocks(inputs: Inputs, stages: list[str]) -> list[Block]:
    """The values of each stage's learning-curve figure, from the file ``dvc plots`` reads
    (``<stage>_curves.json`` in ``plots_dir``): a row per evaluation step, a column per variant."""
    blocks: list[Block] = []
    if inputs.plots_dir is None:
        return blocks
    for stage in stages:
        path = Path(inputs.plots_dir) / f"{stage}_curves.json"
        if not path.is_file():
            continue
        records = json.loads(path.read_text())
        if not records:
            continue
        frame = pd.DataFrame(records).set_index("step").sort_index()
        cells = frame.map(lambda v: "—" if pd.isna(v) else f"{v:.3f}").reset_index()
        blocks += [
            Heading(f"Learning curves of `{stage}`", 4),
            Text(f"The values of the learning-curve figure: the validation metric its title names, seed 0, by "
                 f"training step (`{path.name}`; `dvc plots show` draws them). `—`: no point at that step."),
            Table(cells),
        ]  # fmt: skip
    return blocks


def stage_metric_blocks(inputs: Inputs, stage: str, level: int) -> list[Block]:
    """A stage's evaluation metrics table (and the sample sizes behind them)."""
    own = inputs.summary[inputs.summary["stage"] == stage]
    table = evaluation_only(own)
    blocks: list[Block] = [Heading(f"Stage `{stage}`", level)]
    if table.empty:
        return [*blocks, Text("This stage reported no evaluation metrics.")]
    blocks.append(Table(stage_table(table, runs_of(inputs.collection, stage))))
    sizes = sample_sizes(inputs.collection.values[inputs.collection.values["stage"] == stage])
    if sizes:
        blocks += [Text("Evaluation set sizes (a range where runs differ):"), Bullets(tuple(sizes))]
    return blocks


def _seeds(seeds: list[int | None]) -> str:
    return ", ".join("—" if s is None else str(s) for s in seeds)


def _runs_line(inputs: Inputs, stages: list[str]) -> list[str]:
    parts = []
    for stage in stages:
        runs = runs_of(inputs.collection, stage)
        described = "; ".join(
            f"{'(no variant)' if v == NO_VARIANT else v}: seeds {_seeds(seeds)}" for v, seeds in runs.items()
        )
        parts.append(f"`{stage}`: {sum(map(len, runs.values()))} run(s); {described}")
    return parts


def _ours_label(profile: str) -> str:
    return "ours" if profile == "paper" else "ours (world)"


def paper_blocks(inputs: Inputs, paper: str) -> tuple[list[Block], list[Image]]:
    """A paper's section, and the report figures it made (to be written next to the report)."""
    card = inputs.cards[paper]
    ledger = inputs.ledger[inputs.ledger["paper"] == paper]
    gates = inputs.gates[inputs.gates["paper"] == paper]
    stages = _stages_present(inputs, card.stages)
    counts = Counter(ledger["verdict"])
    blocks: list[Block] = [
        Heading(paper),
        Text(f"{card.title}. How we reproduce it, the metric protocol and every deviation: `{card.doc}`."),
    ]
    if not stages:
        return [*blocks, Text("No runs of this paper's stages yet.")], []
    blocks += [
        Text(
            "Claim tests: "
            + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
            + f". Learning gates passed: {_gates_passed(gates)}."
        ),
        Bullets(tuple(_runs_line(inputs, stages))),
        Heading("What the paper claims", 3),
        Bullets(tuple(card.claims)),
        Heading("Did the models learn? Learning gates", 3),
    ]
    if gates.empty:
        blocks.append(Text("No learning gate is defined for this paper's variants, so every claim is `not testable`."))
    else:
        blocks += [
            Text(
                "A variant learned when its mean over seeds clears its bar: a multiple of, or a margin above, a "
                "control that needs no learning, or an absolute level (then the control is shown for scale). A "
                "claim is testable only if both of its variants pass all of theirs."
            ),
            Table(gates_table(gates)),
        ]

    blocks.append(Heading("Claims", 3))
    if ledger.empty:
        blocks.append(Text("No claim of this paper has been stated by its stages yet."))
    else:
        blocks += [
            Text(
                "One row per claim test. difference = mean of `variant` − mean of `compared with`, with its 95 % "
                "confidence interval over seeds (paired by seed where both ran the same seeds, Welch otherwise); "
                "p is one-sided in the claimed direction (↑ higher is better, ↓ lower), so a row can be "
                "`reproduced` with an interval reaching just below 0. A test 'ours > 0.9 × reference' is a "
                "non-inferiority claim: it holds when the difference stays above −10 % of the compared mean. "
                "Also in `claims.csv`."
            ),
            Table(claims_table(ledger)),
        ]

    if card.tables:
        blocks += [
            Heading("Our numbers beside the paper's", 3),
            Text(
                "`paper:` columns are the paper's reported numbers on its real benchmarks (Appendix: paper-reported "
                f"numbers, with sources); `{_ours_label(inputs.profile)}:` columns are our mean ± std over seeds "
                f"({card.data_for(inputs.profile)}). `—`: no such number (the paper's table lacks it or we have not "
                "transcribed it; or no run of ours yet). Compare the order of the rows, not the values across the "
                "two sides."
            ),
        ]
        for table in card.tables:
            frame = main_table(table, paper, inputs.refs, inputs.summary, _ours_label(inputs.profile))
            blocks += [Heading(table.title, 4), Table(frame)]
            reported = set(inputs.summary.loc[inputs.summary["stage"] == table.stage, "metric"])
            missing = missing_metrics(table, reported) if reported else []
            if missing:
                listed = ", ".join(f"`{m}`" for m in missing)
                blocks.append(Text(f"No run of stage `{table.stage}` reports {listed}: those cells stay empty."))

    images = [img for stage in stages if (img := stage_figure_image(inputs, stage)) is not None]
    figures = images + own_figures(inputs, stages)
    if figures:
        blocks += [Heading("Figures", 3), *figures, *curve_blocks(inputs, stages)]

    blocks.append(Heading("All evaluation metrics", 3))
    for stage in stages:
        blocks += stage_metric_blocks(inputs, stage, 4)

    caveats = card.caveats_for(inputs.profile)
    failed = gates[~gates["passed"]]
    if not failed.empty:
        names = ", ".join(sorted(set(failed["variant"])))
        caveats.insert(0, f"Variants below a learning gate: {names}; claims that involve them are `{NOT_TESTABLE}`.")
    if caveats:
        blocks += [Heading("Caveats", 3), Bullets(tuple(caveats))]
    return blocks, images


def stage_appendix(inputs: Inputs, title: str, stages: list[str]) -> tuple[list[Block], list[Image]]:
    """An appendix of whole stages (data, pre-training, stages no paper card lists)."""
    blocks: list[Block] = [Heading(title)]
    images = []
    for stage in stages:
        blocks += stage_metric_blocks(inputs, stage, 3)
        image = stage_figure_image(inputs, stage)
        images += [image] if image else []
        blocks += ([image] if image else []) + own_figures(inputs, [stage])
    return blocks, images


def method_blocks(alpha: float) -> list[Block]:
    return [
        Heading("Appendix: how these numbers were produced"),
        Bullets(
            (
                "Our numbers are read from the metrics JSON files the pipeline stages write under "
                "`reports/metrics/` (one file per stage run, each run recorded in `dvc.lock`); nothing in our "
                "columns is typed in by hand.",
                "Mean ± std are over seeds: sample standard deviation (ddof = 1); n = number of runs (seeds). "
                "A single run shows its value alone. Numbers are rounded to 4 significant digits.",
                "Stage tables: the metric `a.b.c` is the cell in row `a.b`, column `c` (its last component; "
                "`acc@0.5` counts as one component); a stage with variants has a row per variant. Rows and columns "
                "are sorted, rows component by component. `n` = runs of the row's variant; a cell from fewer runs "
                "gives its own n. Training losses (`train.*`) are in the learning-curve figures, not in these "
                "tables; sample sizes (`n`, `n_*`) are listed under the table.",
                "Stage figures (a paper stage's shows the metrics its claims compare; data and pre-training all "
                "their evaluation metrics): bars = mean, error bars = ± 1 std over seeds (none for a single run). "
                "Quantities whose values all lie in [0, 1] share one x scale, so their bar lengths compare directly; "
                "any other quantity gets a panel and scale of its own.",
                "Claims: a one-sided t-test in the direction the paper claims — paired by seed when both variants "
                f"ran the same seeds, Welch's otherwise (the `test` column says which); alpha = {alpha:g}. Verdict "
                "`reproduced` if the difference goes the claimed way and p < alpha; `not reproduced` if the mean "
                "difference is zero or goes the other way; `inconclusive` if p ≥ alpha or a side has fewer than 2 "
                "seeds. The 95 % interval of the raw difference uses the same pairing (paired or Welch) as the test.",
                "Learning gates: a model that has not learned proves nothing, so a claim is `not testable` unless "
                "both of its variants pass every gate their stage defines for them, and have at least one. A gate "
                "compares a variant's mean metric over seeds with a bar set by a control that needs no learning "
                "(a random box, chance): `times` = margin × control, `plus` = control + margin, `min` = margin "
                "alone; it passes when the mean is ≥ the bar. The test still runs for a `not testable` claim and "
                "its numbers stay in the ledger. Also in `gates.csv`.",
                "Paper-reported numbers come from the package file `vlrepro/report/references.yaml`, each with its "
                "source, and appear only in columns marked `paper:` and in their appendix. Under the default "
                "profile our data is an embedded synthetic stand-in for the papers' benchmarks, so compare claims "
                "(variant vs variant), not absolute values.",
            )
        ),
    ]


def reference_blocks(refs: list[Reference]) -> list[Block]:
    blocks: list[Block] = [
        Heading("Appendix: paper-reported numbers"),
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
        blocks.append(Heading(f"Reported for {paper}", 3))
        blocks.append(Table(pd.DataFrame(rows)) if rows else Text("No reported numbers on file."))
    return blocks
