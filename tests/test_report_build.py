"""build_report end to end on a data stage and a fake paper stage (2 variants × 3 seeds, with claims and gates)."""

from __future__ import annotations

import base64
import csv
import re
import statistics

import pandas as pd
import pytest
from scipy import stats

from vlrepro.io import write_metrics
from vlrepro.report import GATE_COLUMNS, LEDGER_COLUMNS, PAPERS, build_report
from vlrepro.report.claims import ClaimError
from vlrepro.report.collect import MetricsError, collect, summarize
from vlrepro.report.figures import FigureHintError
from vlrepro.report.plots import write_curves

DATA = {
    "baselines": {
        "refcoco": {
            "val": {"random": 0.21, "largest": 0.3, "image_only": 0.005},
            "testA": {"random": 0.24, "largest": 0.26, "image_only": 0.0},
        },
        "refcoco+": {"val": {"random": 0.22, "largest": 0.28, "image_only": 0.001667}},
    },
    "n_images": 120,
}
# per variant: seed → (pointing, deletion, noisy)
AMC_RUNS = {
    "amc": {0: (0.80, 0.010, 0.70), 1: (0.82, 0.012, 0.90), 2: (0.84, 0.011, 0.60)},
    "no_amc": {0: (0.70, 0.030, 0.70), 1: (0.71, 0.034, 0.72), 2: (0.72, 0.032, 0.68)},
}


def claim(claim, metric, higher_is_better=True, variant="amc", reference_variant="no_amc"):
    return {
        "paper": "AMC",
        "claim": claim,
        "metric": metric,
        "variant": variant,
        "reference_variant": reference_variant,
        "higher_is_better": higher_is_better,
    }


CLAIMS = [
    claim("AMC improves pointing", "refcoco+.testA.pointing"),
    claim("AMC explanations are more faithful", "cub.deletion", higher_is_better=False),
    claim("no-AMC improves pointing", "refcoco+.testA.pointing", variant="no_amc", reference_variant="amc"),
    claim("AMC helps a noisy metric", "noisy"),
]
# both variants clear 2 × chance on pointing (bar 0.5; means 0.82 and 0.71), so the t-tests decide the claims
GATES = [
    {"paper": "AMC", "variant": v, "metric": "refcoco+.testA.pointing", "control": "chance", "control_value": 0.25,
     "rule": "times", "margin": 2.0}
    for v in AMC_RUNS
]  # fmt: skip
EXPECTED_VERDICTS = {
    "AMC improves pointing": "reproduced",
    "AMC explanations are more faithful": "reproduced",
    "no-AMC improves pointing": "not reproduced",
    "AMC helps a noisy metric": "inconclusive",
}


def write_fixture(root):
    write_metrics(root / "data.json", "data", DATA)
    for variant, seeds in AMC_RUNS.items():
        for seed, (pointing, deletion, noisy) in seeds.items():
            metrics = {"refcoco+": {"testA": {"pointing": pointing}}, "cub.deletion": deletion, "noisy": noisy}
            # every seed file carries the same claims and gates; the ledger must count each once
            write_metrics(
                root / "amc" / f"{variant}-{seed}.json", "amc", metrics, variant, seed, claims=CLAIMS, gates=GATES
            )
    return root


def expected_cell(values):
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.4g}"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    metrics = write_fixture(tmp_path_factory.mktemp("metrics"))
    out = tmp_path_factory.mktemp("out")
    result = build_report(metrics, out, "Test report", 0.05)
    return metrics, out, result


def section(text, heading):
    """The text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) :]
    nxt = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)
    return rest[: nxt.start()] if nxt else rest


def test_writes_the_files(built):
    _, out, result = built
    for name in (
        "REPORT.md", "report.html", "claims.csv", "gates.csv", "report_figures/data.png", "report_figures/amc.png",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert result["gates_csv"] == out / "gates.csv"
    assert result["stages"] == ["data", "amc"]
    assert result["verdicts"] == {"reproduced": 2, "not reproduced": 1, "inconclusive": 1, "not testable": 0}
    assert not list(out.rglob("*.tmp"))


def test_report_sections(built):
    _, out, _ = built
    md = (out / "REPORT.md").read_text()
    assert md.startswith("# Test report\n")
    paper_headings = (
        "### What the paper claims", "### Did the models learn? Learning gates", "### Claims",
        "### Our numbers beside the paper's", "### Figures", "### All evaluation metrics", "#### Stage `amc`",
        "### Caveats",
    )  # fmt: skip
    amc = section(md, "## AMC")
    positions = [amc.index(f"\n{h}\n") for h in paper_headings]
    assert positions == sorted(positions)  # every paper section in the same order
    top = ["## Summary", *(f"## {p}" for p in PAPERS), "## Appendix: data",
           "## Appendix: how these numbers were produced", "## Appendix: paper-reported numbers"]  # fmt: skip
    positions = [md.index(f"\n{h}\n") for h in top]
    assert positions == sorted(positions)
    assert "### Stage `data`" in section(md, "## Appendix: data")
    for paper in PAPERS[1:]:  # the fixture only ran AMC's stage
        assert "No runs of this paper's stages yet." in section(md, f"## {paper}")


def test_summary_table_counts_verdicts_and_gates_per_paper(built):
    _, out, _ = built
    md = (out / "REPORT.md").read_text()
    header, rows = md_table(section(md, "## Summary"))
    assert header == [
        "paper", "reproduced", "not reproduced", "inconclusive", "not testable", "learning gates passed",
        "profile and data", "wall time",
    ]  # fmt: skip
    by_paper = {r[0]: r for r in rows}
    assert list(by_paper) == list(PAPERS)
    assert by_paper["AMC"][1:6] == ["2", "1", "1", "0", "2 of 2"]
    assert by_paper["AMC"][6].startswith("default: world `vg` regions")
    assert by_paper["AMC"][7] == "not recorded"  # no run of the fixture writes `seconds`
    assert by_paper["SMCIM"][1:6] == ["0", "0", "0", "0", "none defined"] and by_paper["SMCIM"][7] == "no runs yet"
    html = (out / "report.html").read_text()
    assert '<table class="dataframe" id="summary-table">' in html and '<nav id="toc">' in html


def md_table(text):
    """The first Markdown table in ``text`` as (header, rows), cells stripped."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header, _, *rows = ([c.strip() for c in line.strip().strip("|").split("|")] for line in lines)
    return header, rows


def leaves(tree, path=()):
    for key, value in tree.items():
        yield from leaves(value, (*path, key)) if isinstance(value, dict) else [((*path, key), value)]


def test_data_stage_table_is_pivoted(built):
    _, out, _ = built
    data = section((out / "REPORT.md").read_text(), "### Stage `data`")
    header, rows = md_table(data)
    assert header == ["metric", "image_only", "largest", "random"]  # n_images: a size, listed under the table
    # rows sorted component by component: refcoco < refcoco+, testA < val; the top-level metric first
    assert [r[0] for r in rows] == [
        "baselines.refcoco.testA", "baselines.refcoco.val", "baselines.refcoco+.val",
    ]  # fmt: skip
    # every cell independently from the nested dict: row = path minus last key, column = last key
    expected = {(".".join(path[:-1]) or "(top level)", path[-1]): f"{v:.4g}" for path, v in leaves(DATA)}
    assert expected.pop(("(top level)", "n_images")) == "120" and "- `(top level)`: n_images = 120" in data
    got = {(r[0], col): cell for r in rows for col, cell in zip(header[1:], r[1:], strict=True) if cell}
    assert got == expected
    assert "![data metrics](report_figures/data.png)" in data


def test_variant_stage_table_has_a_row_per_prefix_and_variant(built):
    _, out, _ = built
    header, rows = md_table(section((out / "REPORT.md").read_text(), "#### Stage `amc`"))
    assert header == ["metric", "variant", "n", "deletion", "noisy", "pointing"]
    assert [tuple(r[:3]) for r in rows] == [
        ("(top level)", "amc", "3"), ("(top level)", "no_amc", "3"), ("cub", "amc", "3"),
        ("cub", "no_amc", "3"), ("refcoco+.testA", "amc", "3"), ("refcoco+.testA", "no_amc", "3"),
    ]  # fmt: skip
    cells = {(r[0], r[1], col): cell for r in rows for col, cell in zip(header[3:], r[3:], strict=True)}
    where = {"pointing": ("refcoco+.testA", 0), "deletion": ("cub", 1), "noisy": ("(top level)", 2)}
    for variant, seeds in AMC_RUNS.items():
        for quantity, (prefix, i) in where.items():
            assert cells.pop((prefix, variant, quantity)) == expected_cell([r[i] for r in seeds.values()])
    assert set(cells.values()) == {""}  # no other metric exists


def test_paper_numbers_are_sourced_and_only_in_columns_marked_paper(built):
    _, out, _ = built
    md = (out / "REPORT.md").read_text()
    papers = section(md, "## Appendix: paper-reported numbers")
    assert "86.49" in section(papers, "### Reported for AMC")
    assert "paper abstract" in section(papers, "### Reported for AMC")
    assert "TransVG README" in section(papers, "### Reported for SMCIM")
    assert "not available" in section(papers, "### Reported for SMCIM")
    assert "MMDetection re-run" in section(papers, "### Reported for GLIP")
    assert "0.693 ± 0.002" in section(papers, "### Reported for ALA")
    assert "Table 3" in section(papers, "### Reported for BLIP")

    amc = section(md, "## AMC")
    header, rows = md_table(section(amc, "### Our numbers beside the paper's"))
    table = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert table["AMC"]["our variant"] == "amc" and table["ALBEF"]["our variant"] == "baseline"
    assert table["AMC"]["paper: Flickr30k Entities pointing accuracy"] == "86.49 %"
    assert table["AMC"]["paper: RefCOCO+ testA pointing accuracy"] == "80.34 %"
    pointing = [r[0] for r in AMC_RUNS["amc"].values()]
    assert table["AMC"]["ours (world): refcoco+.testA.pointing"] == expected_cell(pointing) + " (n=3)"
    assert table["AMC"]["ours (world): flickr.test.pointing"] == "—"  # the fixture has no flickr metric
    assert table["ALBEF"]["ours (world): refcoco+.testA.pointing"] == "—"  # nor a `baseline` variant
    outside = amc.replace(section(amc, "### Our numbers beside the paper's"), "")
    assert "86.49" not in outside and "86.49" not in section(md, "## Summary")


def test_claims_csv(built):
    metrics, out, result = built
    ledger = pd.read_csv(out / "claims.csv")
    assert list(ledger.columns[:13]) == LEDGER_COLUMNS[:13] == [
        "paper", "claim", "metric", "variant", "reference_variant", "ours_mean", "ours_std",
        "reference_mean", "reference_std", "n_seeds", "test", "p_value", "verdict",
    ]  # fmt: skip
    assert len(ledger) == len(CLAIMS)  # the 6 copies of each claim count once
    assert dict(zip(ledger["claim"], ledger["verdict"], strict=True)) == EXPECTED_VERDICTS
    row = ledger.set_index("claim").loc["AMC improves pointing"]
    ours = [r[0] for r in AMC_RUNS["amc"].values()]
    ref = [r[0] for r in AMC_RUNS["no_amc"].values()]
    assert row["ours_mean"] == pytest.approx(statistics.mean(ours), rel=1e-5)
    assert row["ours_std"] == pytest.approx(statistics.stdev(ours), rel=1e-5)
    assert row["reference_mean"] == pytest.approx(statistics.mean(ref), rel=1e-5)
    assert row["reference_std"] == pytest.approx(statistics.stdev(ref), rel=1e-5)
    assert row["n_seeds"] == 3 and row["test"].startswith("paired t-test")  # both variants ran seeds 0, 1, 2
    assert list(ledger["gates"]) == ["passed"] * len(CLAIMS)
    amc = section((out / "REPORT.md").read_text(), "## AMC")
    header, rows = md_table(section(amc, "### Claims"))
    assert {r[0]: r[header.index("verdict")] for r in rows} == EXPECTED_VERDICTS
    assert "Claim tests: 2 reproduced, 1 not reproduced, 1 inconclusive, 0 not testable." in amc
    # the effect size: the difference of means and its 95 % interval, against scipy's own interval
    interval = stats.ttest_rel(ours, ref).confidence_interval(0.95)
    assert row["difference"] == pytest.approx(statistics.mean(ours) - statistics.mean(ref), rel=1e-5)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((interval.low, interval.high), rel=1e-5)
    cell = {r[0]: r[header.index("difference [95 % CI]")] for r in rows}["AMC improves pointing"]
    assert cell == f"{row['difference']:.4g} [{row['ci_low']:.4g}, {row['ci_high']:.4g}]"


def test_gates_csv_and_table(built):
    _, out, _ = built
    gates = pd.read_csv(out / "gates.csv")
    assert list(gates.columns) == GATE_COLUMNS  # the 6 copies of each gate count once
    assert list(gates["variant"]) == ["amc", "no_amc"]
    for variant, row in gates.set_index("variant").iterrows():
        pointing = statistics.mean(r[0] for r in AMC_RUNS[variant].values())
        assert row["value"] == pytest.approx(pointing, rel=1e-5)
        assert (row["control_value"], row["bar"], row["n_seeds"]) == pytest.approx((0.25, 0.5, 3))
        assert row["passed"]
    amc = section((out / "REPORT.md").read_text(), "## AMC")
    header, rows = md_table(section(amc, "### Did the models learn? Learning gates"))
    assert header == ["variant", "metric", "value", "control", "control value", "bar", "passed"]
    assert rows == [
        ["amc", "refcoco+.testA.pointing", "0.82", "chance", "0.25", "0.5 (2 × control)", "yes"],
        ["no_amc", "refcoco+.testA.pointing", "0.71", "chance", "0.25", "0.5 (2 × control)", "yes"],
    ]


def test_html_is_self_contained(built):
    _, out, _ = built
    html = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(images) == 2
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"https?://|<link|<script|@import|url\(", html)
    assert "<table" in html and "Paper-reported numbers" in html


def test_deterministic_and_independent_of_location(built, tmp_path):
    metrics, out, _ = built
    other_metrics = write_fixture(tmp_path / "elsewhere")
    build_report(other_metrics, tmp_path / "out", "Test report", 0.05)
    for name in (
        "REPORT.md", "claims.csv", "gates.csv", "report.html", "report_figures/amc.png", "report_figures/data.png",
    ):  # fmt: skip
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes(), name


def test_data_stage_alone_and_stale_figures_removed(tmp_path):
    metrics, out = tmp_path / "m", tmp_path / "out"
    write_fixture(metrics)
    build_report(metrics, out, "t", 0.05)
    for f in (metrics / "amc").iterdir():
        f.unlink()
    result = build_report(metrics, out, "t", 0.05)
    assert result["stages"] == ["data"] and result["verdicts"] == {v: 0 for v in result["verdicts"]}
    assert sorted(p.name for p in (out / "report_figures").iterdir()) == ["data.png"]
    md = (out / "REPORT.md").read_text()
    assert all("No runs of this paper's stages yet." in section(md, f"## {p}") for p in PAPERS)
    assert (out / "claims.csv").read_text().splitlines()[0].startswith("paper,claim,metric,")
    assert (out / "gates.csv").read_text() == ",".join(GATE_COLUMNS) + "\n"


def test_summarize_matches_independent_mean_std(tmp_path):
    summary = summarize(collect(write_fixture(tmp_path)).values).set_index(["stage", "variant", "metric"])
    noisy = [r[2] for r in AMC_RUNS["amc"].values()]
    row = summary.loc[("amc", "amc", "noisy")]
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((statistics.mean(noisy), statistics.stdev(noisy), 3))
    assert summary.loc[("data", "—", "baselines.refcoco.val.random"), "n"] == 1


def test_figure_hint_selects_metrics(tmp_path):
    metrics = write_fixture(tmp_path / "m")
    doc = (metrics / "data.json").read_text()
    (metrics / "data.json").write_text(doc.replace('"metrics"', '"figure": {"metrics": ["baselines"]}, "metrics"'))
    build_report(metrics, tmp_path / "out", "t", 0.05)
    (metrics / "data.json").write_text(doc.replace('"metrics"', '"figure": {"metrics": ["nope"]}, "metrics"'))
    with pytest.raises(FigureHintError, match="match none"):
        build_report(metrics, tmp_path / "out", "t", 0.05)


def test_files_of_one_stage_with_different_figure_hints_are_an_error(tmp_path):
    metrics = write_fixture(tmp_path / "m")
    for seed, wanted in ((0, "noisy"), (1, "cub")):
        path = metrics / "amc" / f"amc-{seed}.json"
        path.write_text(path.read_text().replace('"metrics"', f'"figure": {{"metrics": ["{wanted}"]}}, "metrics"'))
    with pytest.raises(MetricsError, match="carry different 'figure' hints"):
        build_report(metrics, tmp_path / "out", "t", 0.05)


# --- bad input: an error naming the file, and the previous report left untouched ---------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"metrics": {"a": 1}}', "'stage'"),
        ('{"stage": "amc"}', "'metrics'"),
        ('{"stage": "amc", "metrics": [1, 2]}', "'metrics'"),
        ('{"stage": "amc", "metrics": {"a": {"b": "high"}}}', r"metrics\.a\.b = 'high'"),
        ('{"stage": "amc", "metrics": {"a": 1}, "seed": "0"}', "'seed'"),
        ("[1, 2]", "top level"),
    ],
)
def test_malformed_metrics_file_names_it(tmp_path, content, message):
    metrics, out = write_fixture(tmp_path / "m"), tmp_path / "out"
    build_report(metrics, out, "t", 0.05)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (metrics / "broken.json").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        build_report(metrics, out, "t", 0.05)
    assert "broken.json" in str(err.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_duplicate_run_is_an_error(tmp_path):
    metrics = write_fixture(tmp_path / "m")
    write_metrics(metrics / "amc" / "copy.json", "amc", {"noisy": 1.0}, "amc", 0)
    with pytest.raises(MetricsError, match=r"copy\.json.*amc-0\.json|amc-0\.json.*copy\.json"):
        collect(metrics)


def test_claim_for_a_variant_without_runs_is_not_testable_and_says_so(tmp_path):
    # A matrix may be finished over several sessions; a misspelt variant shows up the same way, in the ledger.
    metrics = write_fixture(tmp_path / "m")
    write_metrics(
        metrics / "amc" / "extra-0.json", "amc", {"noisy": 1.0}, "extra", 0, claims=[claim("x", "noisy", variant="amx")]
    )
    out = build_report(metrics, tmp_path / "out", "t", 0.05)
    with open(out["claims_csv"]) as f:
        rows = [r for r in csv.DictReader(f) if r["variant"] == "amx"]
    assert [(r["verdict"], r["gates"], r["n_seeds"]) for r in rows] == [("not testable", "no runs of amx yet", "0")]


def test_malformed_claim_row_names_file_and_field(tmp_path):
    metrics = write_fixture(tmp_path / "m")
    bad = {k: v for k, v in claim("x", "noisy").items() if k != "higher_is_better"}
    write_metrics(metrics / "amc" / "extra-0.json", "amc", {"noisy": 1.0}, "extra", 0, claims=[bad])
    with pytest.raises(ClaimError, match=r"amc/extra-0\.json: claims\[0\]: field 'higher_is_better'"):
        build_report(metrics, tmp_path / "out", "t", 0.05)


def test_empty_or_missing_metrics_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_report(tmp_path / "absent", tmp_path / "out", "t", 0.05)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricsError, match="no metrics JSON"):
        build_report(tmp_path / "empty", tmp_path / "out", "t", 0.05)
    assert not (tmp_path / "out").exists()


def test_a_stages_own_figures_are_shown_under_it_and_linked_in_place(tmp_path):
    metrics = write_fixture(tmp_path / "metrics")
    figures = tmp_path / "figures"
    figures.mkdir()
    png = b"\x89PNG\r\n\x1a\n-stand-in-bytes"
    (figures / "amc_curve.png").write_bytes(png)
    (figures / "data_samples.png").write_bytes(b"\x89PNG\r\n\x1a\n-other")
    (figures / "amcx_other.png").write_bytes(b"not this stage's")  # `amc_*` only, not `amcx_*`
    out = tmp_path / "out"
    build_report(metrics, out, "t", 0.05, stage_figures_dir=figures)

    md = (out / "REPORT.md").read_text()
    amc_figures = section(section(md, "## AMC"), "### Figures")
    assert "../figures/amc_curve.png" in amc_figures and "data_samples" not in amc_figures
    assert "amcx_other" not in md
    assert "../figures/data_samples.png" in section(md, "## Appendix: data")
    html = (out / "report.html").read_text()
    assert base64.b64encode(png).decode() in html
    assert not (out / "figures").exists()  # linked in place, not copied


def test_the_values_of_a_papers_learning_curves_are_tabulated_under_its_figures(tmp_path):
    metrics = write_fixture(tmp_path / "metrics")
    figures, plots = tmp_path / "figures", tmp_path / "plots"
    figures.mkdir()
    (figures / "amc_learning_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n-curves")
    write_curves(plots / "amc_curves.json", {"amc": pd.Series([0.2, 0.41234], index=[0, 500]),
                                             "no_amc": pd.Series([0.1], index=[500])})  # fmt: skip
    out = tmp_path / "out"
    build_report(metrics, out, "t", 0.05, stage_figures_dir=figures, plots_dir=plots)

    amc_figures = section(section((out / "REPORT.md").read_text(), "## AMC"), "### Figures")
    rows = [line.split("|")[1:-1] for line in amc_figures.splitlines() if line.startswith("|")]
    assert [c.strip() for c in rows[0]] == ["step", "amc", "no_amc"]
    assert [[c.strip() for c in r] for r in rows[2:]] == [["0", "0.200", "—"], ["500", "0.412", "0.100"]]
    build_report(metrics, tmp_path / "bare", "t", 0.05, stage_figures_dir=figures)  # no plots folder: no table
    assert "Learning curves of" not in (tmp_path / "bare" / "REPORT.md").read_text()
