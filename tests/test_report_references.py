"""The packaged references file loads, covers every paper, and a malformed entry is named in the error."""

from __future__ import annotations

import pytest

from vlrepro.report.references import PAPERS, ReferencesError, load_references, references_frame

GOOD = "- {paper: AMC, role: method, method: AMC, benchmark: RefCOCO+, split: testA, metric: pointing accuracy, value: 80.34, unit: '%', source: paper abstract}\n"  # noqa: E501


@pytest.fixture(scope="module")
def refs():
    return references_frame(load_references())


def test_covers_every_paper_with_sources(refs):
    assert set(refs["paper"]) == set(PAPERS)
    assert refs["source"].str.len().min() > 0


def test_spot_values_from_the_cards(refs):
    def value(**where):
        rows = refs
        for k, v in where.items():
            rows = rows[rows[k] == v]
        assert len(rows) == 1, where
        return rows.iloc[0]

    assert value(paper="AMC", method="AMC", benchmark="Flickr30k Entities")["value"] == 86.49
    albef = value(paper="AMC", method="ALBEF", benchmark="Flickr30k Entities")
    assert {"derived", "unverified"} <= set(albef["flags"].split(", "))
    assert value(paper="GLIP", method="GLIP-T(A)", metric="box AP")["value"] == 42.9
    assert value(paper="GLIP", method="GLIP-T(C)", metric="R@1")["source"] == "MMDetection re-run"
    ala = value(paper="ALA", method="ALA", metric="mIoU", role="method")
    assert (ala["value"], ala["std"]) == (0.693, 0.002)
    assert value(paper="BLIP", method="shared: all", metric="parameters")["value"] == 224
    assert value(paper="SMCIM", method="TransVG (R-50)", split="testB")["source"] == "TransVG README"


def test_smcim_own_numbers_are_not_available(refs):
    own = refs[(refs["paper"] == "SMCIM") & (refs["method"] == "SMCIM")]
    assert len(own) == 3 and own["value"].isna().all()
    assert own["note"].str.contains("not available").all()
    peers = refs[(refs["paper"] == "SMCIM") & (refs["method"] != "SMCIM")]
    assert (peers["role"] == "peer").all() and peers["value"].notna().all()


def _load(tmp_path, text):
    path = tmp_path / "references.yaml"
    path.write_text(text)
    return load_references(path)


def test_minimal_file_loads(tmp_path):
    (ref,) = _load(tmp_path, GOOD)
    assert ref.value == 80.34 and ref.flags == []


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("value: 80.34", "value: '80.34'", "value"),  # a quoted number is not coerced
        (", source: paper abstract", "", "source"),  # required field missing
        ("paper: AMC", "paper: AMX", "paper"),
        ("unit: '%'", "unit: percent", "unit"),
    ],
)
def test_malformed_entry_names_entry_and_field(tmp_path, old, new, field):
    text = GOOD + GOOD.replace("testA", "testB").replace(old, new)
    with pytest.raises(ReferencesError, match=rf"entry 2 \(.*\): field '{field}'"):
        _load(tmp_path, text)


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ReferencesError, match=r"entry 1 .*field 'valeu'"):
        _load(tmp_path, GOOD.replace("value: 80.34", "value: 80.34, valeu: 1"))


def test_missing_value_needs_a_note(tmp_path):
    with pytest.raises(ReferencesError, match="note"):
        _load(tmp_path, GOOD.replace("value: 80.34", "value: null"))


def test_duplicate_entry(tmp_path):
    with pytest.raises(ReferencesError, match="entry 2 .*duplicates entry 1"):
        _load(tmp_path, GOOD + GOOD)


def test_not_a_list(tmp_path):
    with pytest.raises(ReferencesError, match="list of entries"):
        _load(tmp_path, "paper: AMC\n")
