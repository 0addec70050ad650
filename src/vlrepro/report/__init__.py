"""The report stage: paper references, the claims ledger, tables and figures.

``build_report(metrics_dir, out_dir, title, alpha, stage_figures_dir, profile)`` is the entry point the report
notebook calls;
the modules each do one job:

- ``references``: load and validate ``references.yaml`` (paper-reported numbers with sources);
- ``papers``: load and validate ``papers.yaml`` (per paper: its claims, data, caveats, stages, and how our main
  numbers line up with its tables);
- ``collect``: read every metrics JSON into a tidy DataFrame and aggregate over seeds;
- ``gates``: learning gates, the evidence that a variant learned (``reports/gates.csv``); ``gate_rows``: the
  rows a stage writes with its metrics, checked as it writes them;
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

# Resolved on first use: importing the package, or one of its modules (every stage that writes metrics
# imports vlrepro.report.gate_rows), loads no other module of it, nor pandas, scipy, matplotlib or seaborn.
# ``collect`` is not among the names: it is also a module's name; import it from vlrepro.report.collect.
_LAZY = {
    "build_report": "build",
    "LEDGER_COLUMNS": "claims",
    "ClaimError": "claims",
    "ClaimRow": "claims",
    "ClaimTest": "claims",
    "claims_ledger": "claims",
    "decide": "claims",
    "MetricsError": "collect",
    "summarize": "collect",
    "GATE_COLUMNS": "gates",
    "GateError": "gate_rows",
    "GateRow": "gate_rows",
    "evaluate_gates": "gates",
    "PAPERS": "gate_rows",
    "Reference": "references",
    "ReferencesError": "references",
    "load_references": "references",
    "references_frame": "references",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = sorted(_LAZY)
