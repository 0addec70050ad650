"""Paper cards (papers.yaml): validation, the main tables that set our numbers beside the paper's, and
which metrics count as evaluation metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from vlrepro.report.collect import collect
from vlrepro.report.papers import (
    PapersError,
    check_against_references,
    default_path,
    load_papers,
    missing_metrics,
    paper_of_stage,
)
from vlrepro.report.references import PAPERS, load_references
from vlrepro.report.tables import evaluation_only, main_table, sample_sizes

REPO = Path(__file__).resolve().parents[1]


def test_packaged_cards_cover_every_paper_and_resolve_against_the_references():
    cards = load_papers()
    assert list(cards) == list(PAPERS)
    check_against_references(cards, load_references())  # raises on a paper cell no reference has
    assert paper_of_stage(cards, "blip_capfilt") == "BLIP" and paper_of_stage(cards, "pretrain") is None
    assert "Visual Genome" in cards["AMC"].data_for("paper") and "Visual Genome" not in cards["AMC"].data.world
    assert cards["AMC"].data_for("default") == cards["AMC"].data_for("smoke") == cards["AMC"].data.world
    world, paper = cards["AMC"].caveats_for("default"), cards["AMC"].caveats_for("paper")
    assert world[0] == paper[0] == cards["AMC"].caveats.every[0]  # shared, then each profile's own
    assert any("world CLIP" in c for c in world) and not any("world CLIP" in c for c in paper)
    for card in cards.values():
        assert (REPO / card.doc).is_file(), card.doc


def test_packaged_cards_read_metrics_and_variants_the_committed_runs_have():
    """Our side of every main table: a typo in a metric or variant name would show as an empty cell."""
    values = collect(REPO / "reports" / "metrics").values
    for paper, card in load_papers().items():
        assert set(card.stages) <= set(values["stage"]), paper
        for table in card.tables:
            own = values[values["stage"] == table.stage]
            assert missing_metrics(table, set(own["metric"])) == [], (paper, table.title)
            variants = {v for v in [*table.rows.values(), *table.extra_rows.values()] if v}
            assert variants <= set(own["variant"]), (paper, table.title, variants - set(own["variant"]))


def edited(tmp_path, edit):
    raw = yaml.safe_load(default_path().read_text())
    edit(raw)
    path = tmp_path / "papers.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def test_a_misspelt_field_names_paper_and_field(tmp_path):
    path = edited(tmp_path, lambda raw: raw["GLIP"].update(claim=raw["GLIP"].pop("claims")))
    with pytest.raises(PapersError, match=r"papers.yaml GLIP: field 'claims': Field required"):
        load_papers(path)


def test_a_missing_card_is_an_error(tmp_path):
    path = edited(tmp_path, lambda raw: raw.pop("ALA"))
    with pytest.raises(PapersError, match="expected one card for each of AMC, SMCIM, GLIP, ALA, BLIP"):
        load_papers(path)


def test_a_misspelt_paper_method_is_an_error(tmp_path):
    path = edited(tmp_path, lambda raw: raw["GLIP"]["tables"][0]["rows"].update({"GLIP-T(b)": "deep"}))
    with pytest.raises(PapersError, match=r"no reference of GLIP names method 'GLIP-T\(b\)'"):
        check_against_references(load_papers(path), load_references())


def test_a_table_column_no_reference_has_is_an_error(tmp_path):
    path = edited(tmp_path, lambda raw: raw["AMC"]["tables"][0]["columns"][0].update(benchmark="Flickr30K"))
    with pytest.raises(PapersError, match=r"AMC table 'Pointing accuracy': no reference has 'Flickr30K"):
        check_against_references(load_papers(path), load_references())


def summary_rows(rows):
    return pd.DataFrame(rows, columns=["stage", "variant", "metric", "mean", "std", "n"])


def test_main_table_sets_each_side_from_its_own_source():
    card = load_papers()["SMCIM"]
    summary = summary_rows(
        [
            ("smcim", "full", "refcoco.val.acc@0.5", 0.6, 0.01, 3),
            ("smcim", "transformer", "refcoco.val.acc@0.5", 0.5, 0.02, 3),
            ("other", "full", "refcoco.testA.acc@0.5", 0.9, 0.0, 3),  # another stage: not ours here
        ]
    )
    table = main_table(card.tables[0], "SMCIM", load_references(), summary, "ours (world)").set_index("paper's method")
    assert table.loc["SMCIM", "paper: RefCOCO val Acc@0.5"] == "not available"  # a null in references.yaml
    assert table.loc["TransVG (R-50)", "paper: RefCOCO val Acc@0.5"] == "80.5 %"
    assert table.loc["SMCIM", "ours (world): refcoco.val.acc@0.5"] == "0.6 ± 0.01 (n=3)"
    assert table.loc["TransVG (R-50)", "ours (world): refcoco.val.acc@0.5"] == "0.5 ± 0.02 (n=3)"
    assert table.loc["SMCIM", "ours (world): refcoco.testA.acc@0.5"] == "—"


def test_main_table_rows_of_the_paper_only_and_of_ours_only():
    card = load_papers()["ALA"]
    summary = summary_rows(
        [("ala", "gradcam", "cub.test.miou", 0.3, 0.01, 3), ("ala", "full", "cub.test.miou", 0.4, 0.0, 3)]
    )
    table = main_table(card.tables[0], "ALA", load_references(), summary, "ours").set_index("paper's method")
    assert list(table.index) == ["RISE", "F-CAM", "ALA", "Grad-CAM", "attention rollout"]
    assert (
        table.loc["F-CAM", "our variant"] == "—"
        and table.loc["F-CAM", "paper: CUB-200-2011 test mIoU"] == "0.55 ± 0.017"
    )
    assert table.loc["F-CAM", "ours: cub.test.miou"] == "—"
    assert table.loc["Grad-CAM", "paper: CUB-200-2011 test mIoU"] == "—"  # not transcribed
    assert table.loc["Grad-CAM", "ours: cub.test.miou"] == "0.3 ± 0.01 (n=3)"
    assert table.loc["ALA", "ours: cub.test.miou"] == "0.4 ± 0 (n=3)"


def test_a_column_of_ours_only_has_no_paper_side():
    table = load_papers()["GLIP"].tables[0]
    frame = main_table(table, "GLIP", load_references(), summary_rows([]), "ours (world)")
    assert "ours (world): det.novel.AP" in frame and not any(c.startswith("paper: —") for c in frame.columns)


def test_training_metrics_wall_time_and_sizes_are_not_evaluation_metrics():
    summary = summary_rows(
        [
            ("amc", "amc", "flickr.test.pointing", 0.5, 0.1, 3),
            ("amc", "amc", "flickr.test.n", 754, 0.0, 3),
            ("amc", "amc", "flickr.test.n_itm_pairs", 1508, 0.0, 3),
            ("amc", "amc", "flickr.test.noise", 0.2, 0.0, 3),  # starts with n but is not a count
            ("amc", "amc", "train.loss", 1.2, 0.1, 3),
            ("amc", "amc", "train.n", 9, 0.0, 3),
            ("blip", "x", "seconds", 300.0, 5.0, 3),
        ]
    )
    assert list(evaluation_only(summary)["metric"]) == ["flickr.test.pointing", "flickr.test.noise"]
    runs = pd.DataFrame(
        [("flickr.test.n", 754.0), ("flickr.test.n", 754.0), ("flickr.test.n_itm_pairs", 1508.0),
         ("flickr.val.n", 700.0), ("flickr.val.n", 702.0), ("train.n", 9.0), ("flickr.test.pointing", 0.5)],
        columns=["metric", "value"],
    )  # fmt: skip
    assert sample_sizes(runs) == ["`flickr.test`: n = 754, n_itm_pairs = 1508", "`flickr.val`: n = 700–702"]


def test_curves_for_dvc_plots_have_every_line_in_every_record(tmp_path):
    from vlrepro.io import read_json
    from vlrepro.report.plots import write_curves

    curves = {"full": pd.Series([0.1, 0.5], index=[250, 500]), "shallow": pd.Series([0.3], index=[500])}
    path = write_curves(tmp_path / "curves.json", curves)
    assert read_json(path) == [
        {"step": 250, "full": 0.1, "shallow": None},  # a gap for DVC, not a NaN JSON cannot hold
        {"step": 500, "full": 0.5, "shallow": 0.3},
    ]
