"""One seaborn figure per stage: bars at the mean per variant, error bars ± 1 std over seeds.

Figures are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas) rather than through pyplot: that is
headless on any machine and, unlike ``matplotlib.use("Agg")``, leaves the backend of a notebook that
imports this module alone. PNGs are saved without the "Software" metadata, so equal inputs give equal bytes.

A stage may steer its figure with an optional ``"figure"`` hint in its metrics JSON::

    "figure": {"metrics": ["refcoco", "flickr.val.pointing"], "title": "Pointing game"}

``metrics`` are dotted names or prefixes of them (e.g. to keep latency in ms out of an accuracy plot).
"""

from __future__ import annotations

import io
import re
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


class FigureHintError(ValueError):
    """A malformed ``"figure"`` hint."""


def select_metrics(values: pd.DataFrame, hint: dict[str, Any] | None, where: str) -> pd.DataFrame:
    """The rows of ``values`` that the hint asks for (all rows without a hint)."""
    if not hint:
        return values
    unknown = sorted(set(hint) - {"metrics", "title"})
    wanted = hint.get("metrics", [])
    if unknown or not isinstance(wanted, list) or not all(isinstance(m, str) and m for m in wanted):
        raise FigureHintError(f'{where}: figure hint must be {{"metrics": [names or prefixes], "title": str}}')
    if not wanted:
        return values
    keep = values["metric"].map(lambda m: any(m == w or m.startswith(w + ".") for w in wanted))
    if not keep.any():
        raise FigureHintError(f"{where}: figure hint metrics {wanted} match none of the stage's metrics")
    return values[keep]


def split_metric(metric: str) -> tuple[str, str]:
    """'refcocog.val.acc@0.5' → ('refcocog.val', 'acc@0.5'): the last component names the quantity.

    A dot followed by a digit stays inside a component, so thresholds like ``acc@0.5`` survive.
    """
    parts = re.split(r"\.(?=\D)", metric)
    return ".".join(parts[:-1]) or "(value)", parts[-1]


def stage_figure(values: pd.DataFrame, title: str) -> bytes:
    """PNG bytes of bar plots of ``values`` (columns metric, variant, value; one stage).

    One panel per quantity (the metric's last component) with its own x scale, so that e.g. a latency
    in ms does not flatten the accuracies next to it; bars within a panel are variants.
    """
    parts = values["metric"].map(split_metric)
    values = values.assign(where=parts.str[0], quantity=parts.str[1])
    quantities = sorted(values["quantity"].unique())
    variants = sorted(values["variant"].unique())
    rows = [values.loc[values["quantity"] == q, "where"].nunique() * len(variants) for q in quantities]
    fig = Figure(figsize=(8.0, min(1.0 + sum(0.9 + 0.25 * r for r in rows), 80.0)), dpi=100, layout="constrained")
    axes = fig.subplots(len(quantities), 1, squeeze=False, height_ratios=[1.5 + r for r in rows])[:, 0]
    for i, (ax, quantity) in enumerate(zip(axes, quantities, strict=True)):
        panel = values[values["quantity"] == quantity]
        sns.barplot(
            data=panel,
            x="value",
            y="where",
            hue="variant",
            order=sorted(panel["where"].unique()),
            hue_order=variants,
            errorbar="sd",  # sample std over seeds; a single seed gets no bar
            orient="h",
            legend=i == 0 and len(variants) > 1,  # one unnamed variant needs no legend
            ax=ax,
        )
        ax.set_title(quantity, fontsize="medium")
        ax.set_xlabel("")
        ax.set_ylabel("")
    if axes[0].get_legend() is not None:
        axes[0].legend(title="variant", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[-1].set_xlabel("mean ± std over seeds")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
