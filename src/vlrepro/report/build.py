"""Build ``REPORT.md``, ``report.html``, ``claims.csv`` and ``gates.csv`` from the metrics JSON files of every stage.

Everything is computed in memory first and written only when all of it succeeded, each file atomically,
so a bad input leaves the previous report untouched. Output is deterministic: inputs are read in sorted
order, tables are sorted, there are no timestamps or absolute paths, and PNGs carry no metadata.

Files written under ``out_dir``: ``REPORT.md``, ``report.html`` (figures embedded as base64 PNG, no
external CSS/JS, a table of contents), ``claims.csv``, ``gates.csv`` (the learning gates the claims depend
on) and ``report_figures/<stage>.png`` (the figures REPORT.md links to). A stage's own figures,
``<stage>_*.png`` in ``stage_figures_dir`` (e.g. a paper's learning curves), are shown in its paper's section
(or appendix), linked in place rather than copied. The order of the document is in :mod:`.sections`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlrepro.io import atomic_write_bytes, atomic_write_text
from vlrepro.report.claims import VERDICTS, claims_ledger, ledger_csv
from vlrepro.report.collect import collect, ordered_stages, summarize
from vlrepro.report.gates import evaluate_gates, gates_csv
from vlrepro.report.papers import check_against_references, load_papers, paper_of_stage
from vlrepro.report.references import PAPERS, load_references
from vlrepro.report.render import Block, Heading, Image, Text, to_html, to_markdown
from vlrepro.report.sections import (
    FIGURES_DIR,
    Inputs,
    method_blocks,
    paper_blocks,
    reference_blocks,
    stage_appendix,
    summary_blocks,
)

APPENDIX_STAGES = {"data": "Appendix: data", "pretrain": "Appendix: pre-training"}


def build_report(
    metrics_dir: Path,
    out_dir: Path,
    title: str,
    alpha: float,
    stage_figures_dir: Path | None = None,
    profile: str = "default",
    plots_dir: Path | None = None,
) -> dict[str, Any]:
    """Read every metrics JSON under ``metrics_dir`` and write the report files into ``out_dir``.

    ``profile`` (params.yaml's) says in the summary which data the numbers come from; ``plots_dir`` holds the
    learning curves' values (``<stage>_curves.json``), tabulated under each paper's figures. Returns the written
    paths (``report_md``, ``report_html``, ``claims_csv``, ``gates_csv``, ``figures``), the ``stages`` found,
    the per-seed aggregate ``summary``, the ``gates`` and the ``claims`` ledger (DataFrames), and
    ``verdicts`` (verdict → count), for a notebook to display.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    metrics_dir, out_dir = Path(metrics_dir), Path(out_dir)
    collection = collect(metrics_dir)
    gates = evaluate_gates(collection)
    refs, cards = load_references(), load_papers()
    check_against_references(cards, refs)
    inputs = Inputs(
        collection=collection,
        summary=summarize(collection.values),
        gates=gates,
        ledger=claims_ledger(collection, alpha, gates),
        refs=refs,
        cards=cards,
        profile=profile,
        alpha=alpha,
        stage_figures_dir=stage_figures_dir,
        out_dir=out_dir,
        plots_dir=plots_dir,
    )
    stages = ordered_stages({f.stage for f in collection.files})

    blocks: list[Block] = [
        Heading(title, 1),
        Text(
            f"Profile `{profile}`. Five papers reproduced as one pipeline; each paper's section gives its claims' "
            "verdicts, the learning gates they depend on, our numbers beside the paper's, figures and caveats. "
            "The data, the pre-training, how the numbers were produced and the paper-reported numbers follow "
            "as appendices."
        ),
        *summary_blocks(inputs),
    ]
    images: list[Image] = []
    for paper in PAPERS:
        section, made = paper_blocks(inputs, paper)
        blocks += section
        images += made
    for stage, heading in APPENDIX_STAGES.items():
        if stage in stages:
            section, made = stage_appendix(inputs, heading, [stage])
            blocks += section
            images += made
    others = [s for s in stages if s not in APPENDIX_STAGES and paper_of_stage(cards, s) is None]
    if others:
        section, made = stage_appendix(inputs, "Appendix: other stages", others)
        blocks += section
        images += made
    blocks += method_blocks(alpha) + reference_blocks(refs)

    ledger = inputs.ledger
    markdown, html = to_markdown(blocks), to_html(blocks, title)
    csv, gate_csv = ledger_csv(ledger), gates_csv(gates)

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
        "summary": inputs.summary,
        "gates": gates,
        "claims": ledger,
        "verdicts": {v: int((ledger["verdict"] == v).sum()) for v in VERDICTS},
    }
