"""The report stage: paper references, the claims ledger, tables and figures.

``build_report(metrics_dir, out_dir, title, alpha, stage_figures_dir, profile)`` is the entry point the report
notebook calls;
the modules each do one job:

- ``references``: load and validate ``references.yaml`` (paper-reported numbers with sources);
- ``papers``: load and validate ``papers.yaml`` (per paper: its claims, data, caveats, stages, and how our main
  numbers line up with its tables);
- ``collect``: read every metrics JSON into a tidy DataFrame and aggregate over seeds;
- ``gates``: learning gates, the evidence that a variant learned (``reports/gates.csv``);
- ``claims``: the claim row format, the one-sided t-test (paired or Welch) and the ledger (``reports/claims.csv``);
  a claim whose variants have not passed their gates is ``not testable``;
- ``figures``: a grouped bar chart per stage (a paper stage's: the metrics its claims compare), quantities in
  [0, 1] on one shared x scale;
- ``plots``: learning curves as the files ``dvc plots`` reads;
- ``tables``: the tables as formatted DataFrames (stage metrics, gates, claims with effect sizes, main tables);
- ``sections``: the document in reading order (summary, one section per paper, appendices);
- ``render``: the same blocks as Markdown and as self-contained HTML (with a table of contents);
- ``build``: put it together and write the files atomically.
"""

import importlib
from typing import Any

from vlrepro.report.collect import MetricsError, collect, summarize
from vlrepro.report.gates import GATE_COLUMNS, GateError, GateRow, evaluate_gates
from vlrepro.report.references import PAPERS, Reference, ReferencesError, load_references, references_frame

# Resolved on first use: a matrix run that only validates its gate rows (vlrepro.io imports
# vlrepro.report.gates) should not pay for importing scipy, matplotlib and seaborn.
_LAZY = {
    "build_report": "build",
    "LEDGER_COLUMNS": "claims",
    "ClaimError": "claims",
    "ClaimRow": "claims",
    "ClaimTest": "claims",
    "claims_ledger": "claims",
    "decide": "claims",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "GATE_COLUMNS",
    "LEDGER_COLUMNS",
    "PAPERS",
    "ClaimError",
    "ClaimRow",
    "ClaimTest",
    "GateError",
    "GateRow",
    "MetricsError",
    "Reference",
    "ReferencesError",
    "build_report",
    "claims_ledger",
    "collect",
    "decide",
    "evaluate_gates",
    "load_references",
    "references_frame",
    "summarize",
]
