"""One grouped horizontal bar chart per stage: bars at the mean over seeds, error bars ± 1 std over seeds.

Layout. Each metric name splits into a prefix and a quantity, its last component
(:func:`vlrepro.report.collect.split_metric`); y = prefix, in the same order as the stage's table.

- A stage without variants: hue = quantity, so e.g. the four blind baselines of one split sit side by
  side on one axis (``baselines.refcoco.val`` × ``centre``, ``image_only``, ``largest``, ``random``).
- A stage with variants: one panel (facet) per quantity, hue = variant, one colour per variant throughout.

Scales. Quantities whose values all lie in [0, 1] (accuracies, rates, AUCs: :data:`UNIT_SCALE`) share one
x scale: without variants they are drawn in one panel, with variants their panels share the x axis. Any
other quantity (a latency in ms, a count, a loss) gets a panel and an x scale of its own, so it neither
flattens the others nor is flattened by them. A bar for a quantity of 0.005 is therefore drawn 1/50 as long
as one of 0.25 whenever both are in [0, 1]. :func:`layout` makes these choices; :func:`draw_stage` draws
them. Sizes grow with the number of bars (about 18 px per bar), so ten prefixes × four hues stay legible.

Figures are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas) rather than through pyplot: that is
headless on any machine and, unlike ``matplotlib.use("Agg")``, leaves the backend of a notebook that
imports this module alone. PNGs are saved without the "Software" metadata, so equal inputs give equal bytes.

A stage may steer its figure with an optional ``"figure"`` hint in its metrics JSON::

    "figure": {"metrics": ["refcoco", "flickr.val.pointing"], "title": "Pointing game"}

``metrics`` are dotted names or prefixes of them (e.g. to keep latency in ms out of an accuracy plot).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from vlrepro.report.collect import NO_VARIANT, prefix_key, prefix_label, split_metric

UNIT_SCALE = "[0, 1]"
BAR_IN = 0.18  # inches per bar
GAP_IN = 0.22  # inches between two prefixes' groups of bars
MAX_HEIGHT_IN = 60.0


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


@dataclass(frozen=True)
class Panel:
    """One axes of a stage figure."""

    title: str
    quantities: tuple[str, ...]  # the quantities drawn in it
    hue: str  # "quantity" (a stage without variants) or "variant"
    scale: str  # panels with the same scale share their x axis: UNIT_SCALE or the quantity's own name


def _with_names(values: pd.DataFrame) -> pd.DataFrame:
    parts = values["metric"].map(split_metric)
    return values.assign(prefix=parts.str[0], quantity=parts.str[1])


def scales(values: pd.DataFrame) -> dict[str, str]:
    """quantity → its x scale: UNIT_SCALE if every value of it lies in [0, 1], else its own name."""
    named = _with_names(values)
    in_unit = named["value"].between(0.0, 1.0).groupby(named["quantity"]).all()
    return {q: UNIT_SCALE if ok else q for q, ok in sorted(in_unit.items())}


def layout(values: pd.DataFrame) -> list[Panel]:
    """The panels of a stage's figure (``values``: columns metric, variant, value), top to bottom:
    quantities on the [0, 1] scale first, then one per other quantity, each group in sorted order."""
    by_scale = scales(values)
    unit = tuple(q for q, s in by_scale.items() if s == UNIT_SCALE)
    own = tuple(q for q, s in by_scale.items() if s != UNIT_SCALE)
    if set(values["variant"]) != {NO_VARIANT}:
        return [Panel(q, (q,), "variant", by_scale[q]) for q in unit + own]
    panels = [Panel(q, (q,), "quantity", q) for q in own]
    if len(unit) == 1:
        panels.insert(0, Panel(unit[0], unit, "quantity", UNIT_SCALE))
    elif unit:
        panels.insert(0, Panel("quantities in [0, 1], one x scale", unit, "quantity", UNIT_SCALE))
    return panels


def _common_lead(prefixes: list[str]) -> str:
    """The leading components all prefixes share, if each keeps at least one of its own ('' if none)."""
    split = [prefix_key(p) for p in prefixes]
    if not split or any(not s for s in split):
        return ""
    n = 0
    while all(len(s) > n + 1 and s[n] == split[0][n] for s in split):
        n += 1
    return ".".join(split[0][:n]) + "." if n else ""


def _palette(levels: list[str]) -> dict[str, Any]:
    colours = sns.color_palette("tab10" if len(levels) <= 10 else "husl", len(levels))
    return dict(zip(levels, colours, strict=True))


def draw_stage(values: pd.DataFrame, title: str) -> Figure:
    """The figure of one stage's per-seed ``values`` (columns metric, variant, value); see the module doc."""
    values = _with_names(values)
    variants = sorted(values["variant"].unique())
    panels = layout(values)

    # per panel: its rows (prefixes in table order) and the leading components they all share, which
    # move into the y label ('baselines.*') to keep the tick labels short
    data, orders, leads, heights = [], [], [], []
    for panel in panels:
        d = values[values["quantity"].isin(panel.quantities)]
        prefixes = sorted(d["prefix"].unique(), key=prefix_key)
        lead = _common_lead(prefixes)
        labels = {p: prefix_label(p[len(lead) :]) for p in prefixes}
        data.append(d.assign(row=d["prefix"].map(labels)))
        orders.append([labels[p] for p in prefixes])
        leads.append(lead)
        n_hue = len(panel.quantities) if panel.hue == "quantity" else len(variants)
        heights.append(0.45 + len(prefixes) * (BAR_IN * n_hue + GAP_IN))
    height = min(0.8 + sum(heights) + 0.3 * len(panels), MAX_HEIGHT_IN)
    fig = Figure(figsize=(8.0, height), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]

    variant_colours = _palette(variants)
    first_of_scale: dict[str, Any] = {}
    for ax, panel, panel_data, order, lead in zip(axes, panels, data, orders, leads, strict=True):
        if panel.scale in first_of_scale:
            ax.sharex(first_of_scale[panel.scale])
        else:
            first_of_scale[panel.scale] = ax
        if panel.hue == "quantity":
            hue_order, palette = list(panel.quantities), _palette(list(panel.quantities))
            legend = len(hue_order) > 1
        else:
            hue_order, palette = variants, variant_colours
            legend = ax is axes[0] and variants != [NO_VARIANT]
        sns.barplot(
            data=panel_data,
            x="value",
            y="row",
            hue=panel.hue,
            order=order,
            hue_order=hue_order,
            palette=palette,
            errorbar="sd",  # sample std over seeds; a single seed gets no error bar
            err_kws={"linewidth": 1.2},
            capsize=0.15,
            orient="h",
            legend=legend,
            ax=ax,
        )
        # thin lines between the groups of bars of two prefixes, and a light grid to read values off
        if len(order) > 1:
            ax.hlines([i + 0.5 for i in range(len(order) - 1)], 0, 1, transform=ax.get_yaxis_transform(),
                      colors="0.8", linewidth=0.6)  # fmt: skip
        ax.grid(axis="x", color="0.9")
        ax.set_axisbelow(True)
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel("")
        ax.set_ylabel(f"{lead}*" if lead else "")  # e.g. "baselines.*": the part every row label shares
        if legend:
            ax.legend(title=panel.hue, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[-1].set_xlabel("mean ± std over seeds")
    fig.suptitle(title)
    return fig


def stage_figure(values: pd.DataFrame, title: str) -> bytes:
    """PNG bytes of :func:`draw_stage` (no "Software" metadata, so equal inputs give equal bytes)."""
    buf = io.BytesIO()
    draw_stage(values, title).savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
