import json

import pytest
from test_real_vg import write_vg

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.refer import REFER_SETS
from vlrepro.data.real.suite import build_real, configured_datasets
from vlrepro.data.records import load_split


def test_nothing_configured_writes_an_empty_manifest(tmp_path):
    assert build_real(RealDataConfig(), tmp_path / "real") == {}
    assert json.loads((tmp_path / "real" / "manifest.json").read_text()) == {"datasets": {}}


def test_configured_dataset_is_converted_to_record_folders(tmp_path):
    cfg = RealDataConfig(visual_genome=write_vg(tmp_path / "vg"))
    assert list(configured_datasets(cfg)) == ["visual_genome"]
    counts = build_real(cfg, tmp_path / "real")
    split = load_split(tmp_path / "real" / "visual_genome" / "train")
    assert counts == {"visual_genome": {"train": len(split.records)}} and len(split.records) == 3
    assert split.records[0].text == "the clock is green in colour"


def test_refer_sets_are_picked_by_the_files_present(tmp_path):
    (tmp_path / "refer" / "refcoco+").mkdir(parents=True)
    (tmp_path / "refer" / "refcoco+" / "refs(unc).p").write_bytes(b"")
    assert list(configured_datasets(RealDataConfig(refer=tmp_path / "refer"))) == ["refcoco+"]


def test_refer_path_without_any_refer_set_is_an_error(tmp_path):
    # e.g. data.real.refer pointing one level too deep (at refcoco/ itself): nothing would be converted
    (tmp_path / "refer" / "refcoco").mkdir(parents=True)
    (tmp_path / "refer" / "refcoco" / "refs(unc).p").write_bytes(b"")
    wrong = tmp_path / "refer" / "refcoco"
    with pytest.raises(DatasetError) as err:
        configured_datasets(RealDataConfig(refer=wrong))
    msg = str(err.value)
    assert msg.startswith(f"{wrong}: data.real.refer is set but holds no refer set")
    for _, folder, split_by in REFER_SETS:  # every path tried is listed
        assert str(wrong / folder / f"refs({split_by}).p") in msg
    assert "expected at least one of them" in msg and 'README "Real datasets"' in msg
    with pytest.raises(DatasetError, match="holds no refer set"):
        build_real(RealDataConfig(refer=tmp_path / "missing"), tmp_path / "real")


def test_a_dataset_no_longer_configured_is_removed(tmp_path):
    build_real(RealDataConfig(visual_genome=write_vg(tmp_path / "vg")), tmp_path / "real")
    assert (tmp_path / "real" / "visual_genome" / "train" / "records.json").is_file()
    assert build_real(RealDataConfig(), tmp_path / "real") == {}
    assert not (tmp_path / "real" / "visual_genome").exists()
