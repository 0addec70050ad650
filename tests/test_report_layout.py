"""Stage tables (metric names pivoted into prefix rows × quantity columns) and stage figures (shared scales,
bars at the means, error bars ± 1 std, legible at ten prefixes × four hues), checked on the drawn artists."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from vlrepro.report.collect import NO_VARIANT, VALUE_COLUMNS, prefix_key, split_metric, summarize
from vlrepro.report.figures import UNIT_SCALE, Panel, draw_stage, layout
from vlrepro.report.tables import stage_table


def frame(runs):
    """{(variant, seed): {metric: value}} → the tidy values of one stage, as collect() gives them."""
    rows = [
        ("s", variant, seed, metric, value, f"{variant}-{seed}.json")
        for (variant, seed), metrics in runs.items()
        for metric, value in metrics.items()
    ]
    return pd.DataFrame(rows, columns=VALUE_COLUMNS).astype({"seed": "Int64", "value": "float64"})


def table(runs):
    seeds: dict[str, list] = {}
    for variant, seed in runs:
        seeds.setdefault(variant, []).append(seed)
    return stage_table(summarize(frame(runs)), {v: sorted(s) for v, s in sorted(seeds.items())})


def bars(ax, legend_ax=None):
    """(y tick label, hue label) → (bar length, error bar (low, high) or None), read off the drawn artists:
    the hue from the legend's colours, an error bar from the line at the bar's y centre."""
    legend = (legend_ax or ax).get_legend()
    hue = {
        to_hex(h.get_facecolor()): t.get_text() for h, t in zip(legend.legend_handles, legend.get_texts(), strict=True)
    }
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    errors = {}
    for line in ax.lines:
        xs, ys = ([v for v in data if v == v] for data in (line.get_xdata(), line.get_ydata()))  # drop NaN breaks
        if xs:
            errors[round(sum(ys) / len(ys), 6)] = (min(xs), max(xs))
    out = {}
    for p in ax.patches:
        if p.get_label() == "_nolegend_" and p.get_height() > 0:  # not a legend proxy
            y = p.get_y() + p.get_height() / 2
            key = (ticks[round(y)], hue[to_hex(p.get_facecolor())])
            assert key not in out
            out[key] = (p.get_width(), errors.pop(round(y, 6), None))
    assert not errors  # every error bar belongs to a bar
    return out


# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "parts"),
    [
        ("baselines.refcoco.val.image_only", ("baselines.refcoco.val", "image_only")),
        ("refcocog.val.acc@0.5", ("refcocog.val", "acc@0.5")),
        ("acc@0.5", ("", "acc@0.5")),
        ("noisy", ("", "noisy")),
    ],
)
def test_split_metric_keeps_thresholds_whole(metric, parts):
    assert split_metric(metric) == parts


def test_prefixes_sort_component_by_component():
    prefixes = ["refcocog.val", "refcoco+.val", "refcoco.val", "refcoco.testB", "", "refcoco.testA"]
    assert sorted(prefixes, key=prefix_key) == [
        "", "refcoco.testA", "refcoco.testB", "refcoco.val", "refcoco+.val", "refcocog.val",
    ]  # fmt: skip


# --- tables ------------------------------------------------------------------------------------------------


def test_single_run_table_pivots_last_component_into_columns():
    t = table({(NO_VARIANT, None): {"r.val.acc@0.5": 0.71, "r.val.acc@0.75": 0.4, "r.testA.acc@0.5": 0.123456}})
    assert list(t.columns) == ["metric", "acc@0.5", "acc@0.75"]
    assert t.values.tolist() == [["r.testA", "0.1235", ""], ["r.val", "0.71", "0.4"]]


def test_several_seeds_without_variants_give_mean_std_and_n():
    a, b = [0.2, 0.25, 0.3], [0.01, 0.02, 0.0]
    t = table({(NO_VARIANT, s): {"x.val.a": a[s], "x.val.b": b[s]} for s in range(3)})
    assert list(t.columns) == ["metric", "n", "a", "b"]
    mean_std = [f"{statistics.mean(v):.4g} ± {statistics.stdev(v):.4g}" for v in (a, b)]
    assert t.values.tolist() == [["x.val", "3", *mean_std]]


def test_cell_from_fewer_seeds_than_its_variant_says_so():
    runs = {("v", 0): {"p.q": 1.0, "p.r": 2.0}, ("v", 1): {"p.q": 3.0, "p.r": 5.0}, ("v", 2): {"p.q": 5.0}}
    t = table(runs).set_index(["metric", "variant"])
    assert t.loc[("p", "v"), "n"] == "3"
    assert t.loc[("p", "v"), "q"] == "3 ± 2"
    assert t.loc[("p", "v"), "r"] == f"3.5 ± {statistics.stdev([2.0, 5.0]):.4g} (n=2)"


def test_variant_rows_only_where_the_variant_has_the_prefix():
    runs = {("a", 0): {"x.m": 0.5, "y.m": 0.25}, ("b", 0): {"x.m": 0.75}}
    t = table(runs)
    assert list(t.columns) == ["metric", "variant", "m"]  # one run each: no n column
    assert t.values.tolist() == [["x", "a", "0.5"], ["x", "b", "0.75"], ["y", "a", "0.25"]]


# --- figures -----------------------------------------------------------------------------------------------


def test_layout_without_variants_puts_unit_quantities_on_one_panel():
    values = frame({(NO_VARIANT, None): {"b.val.random": 0.2, "b.val.image_only": 0.005, "n_images": 120.0}})
    assert layout(values) == [
        Panel("quantities in [0, 1], one x scale", ("image_only", "random"), "quantity", UNIT_SCALE),
        Panel("n_images", ("n_images",), "quantity", "n_images"),
    ]


def test_layout_with_variants_facets_by_quantity():
    runs = {(v, s): {"r.val.acc@0.5": 0.5, "r.val.pointing": 0.9, "latency_ms": 20.0 + s} for v in "ab" for s in (0, 1)}
    assert layout(frame(runs)) == [
        Panel("acc@0.5", ("acc@0.5",), "variant", UNIT_SCALE),
        Panel("pointing", ("pointing",), "variant", UNIT_SCALE),
        Panel("latency_ms", ("latency_ms",), "variant", "latency_ms"),
    ]


def test_a_negative_value_leaves_the_unit_scale():
    values = frame({(NO_VARIANT, None): {"x.a": 0.5, "x.b": -0.1, "y.b": 0.3}})
    assert [(p.quantities, p.scale) for p in layout(values)] == [(("a",), UNIT_SCALE), (("b",), "b")]


def test_bars_without_variants_share_one_axis_at_their_values():
    metrics = {
        "baselines.refcoco.val.random": 0.25,
        "baselines.refcoco.val.image_only": 0.005,
        "baselines.refcoco+.testA.random": 0.24,
        "baselines.refcoco+.testA.image_only": 0.0,
        "n_images": 120.0,
    }
    fig = draw_stage(frame({(NO_VARIANT, None): metrics}), "t")
    unit, count = fig.axes
    # the shared lead 'baselines.' moves into the axis label; rows in component order
    assert [t.get_text() for t in unit.get_yticklabels()] == ["refcoco.val", "refcoco+.testA"]
    assert unit.get_ylabel() == "baselines.*"
    drawn = bars(unit)
    assert {k: length for k, (length, _) in drawn.items()} == pytest.approx(
        {("refcoco.val", "random"): 0.25, ("refcoco.val", "image_only"): 0.005,
         ("refcoco+.testA", "random"): 0.24, ("refcoco+.testA", "image_only"): 0.0}
    )  # fmt: skip
    assert all(error is None for _, error in drawn.values())  # one run: no error bars
    assert unit.get_xlim()[1] < 1.0  # the count does not stretch the accuracies
    lengths = [p.get_width() for p in count.patches if p.get_height() > 0]
    assert lengths == [120.0] and count.get_title() == "n_images"


def test_variant_bars_at_means_with_error_bars_of_one_std():
    seeds = {
        "amc": {"r.val.pointing": [0.8, 0.82, 0.86], "r.testA.pointing": [0.6, 0.7, 0.65], "r.val.acc@0.5": [0.5] * 3},
        "base": {"r.val.pointing": [0.7, 0.71, 0.75], "r.testA.pointing": [0.5, 0.55, 0.6], "r.val.acc@0.5": [0.1] * 3},
    }
    runs = {(v, s): {m: vals[s] for m, vals in ms.items()} for v, ms in seeds.items() for s in range(3)}
    fig = draw_stage(frame(runs), "t")
    acc, pointing = fig.axes
    assert (acc.get_title(), pointing.get_title()) == ("acc@0.5", "pointing")
    assert acc.get_shared_x_axes().joined(acc, pointing)  # one scale for the two [0, 1] quantities
    assert acc.get_xlim() == pointing.get_xlim()
    pointing_seeds = {(m.split(".")[1], v): x for v, ms in seeds.items() for m, x in ms.items() if "pointing" in m}
    drawn = bars(pointing, legend_ax=acc)
    assert set(drawn) == set(pointing_seeds)
    for key, x in pointing_seeds.items():
        m, sd = statistics.mean(x), statistics.stdev(x)
        length, (low, high) = drawn[key]
        assert (length, low, high) == pytest.approx((m, m - sd, m + sd))
    assert acc.get_legend() is not None and pointing.get_legend() is None  # one legend for the variants


def test_quantity_on_its_own_scale_is_not_shared():
    runs = {(v, s): {"r.val.pointing": 0.5 + s / 10, "latency_ms": 20.0 + s} for v in ("a", "b") for s in (0, 1)}
    pointing, latency = draw_stage(frame(runs), "t").axes
    assert not pointing.get_shared_x_axes().joined(pointing, latency)
    assert latency.get_xlim()[1] > 20 and pointing.get_xlim()[1] < 1


def test_ten_prefixes_by_four_hues_stay_legible():
    quantities = ["centre", "image_only", "largest", "random"]
    metrics = {f"bench{i}.split{i % 3}.{q}": 0.05 * (i + 1) / (j + 1)
               for i in range(10) for j, q in enumerate(quantities)}  # fmt: skip
    fig = draw_stage(frame({(NO_VARIANT, None): metrics}), "t")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    assert 6 <= fig.get_figheight() <= 14
    drawn = [p for p in ax.patches if p.get_label() == "_nolegend_" and p.get_height() > 0]
    assert len(drawn) == 40
    assert min(p.get_window_extent(renderer).height for p in drawn) >= 12  # pixels per bar
    labels = sorted((t.get_window_extent(renderer) for t in ax.get_yticklabels()), key=lambda b: b.y0)
    assert all(lower.y1 <= upper.y0 for lower, upper in zip(labels, labels[1:], strict=False))
    fig_box = fig.bbox
    assert all(b.x0 >= fig_box.x0 for b in labels)  # tick labels not cut off
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert legend_box.x0 >= ax.get_window_extent(renderer).x1 and legend_box.x1 <= fig_box.x1  # beside the bars
