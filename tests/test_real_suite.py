import json

from test_real_vg import write_vg

from vlrepro.data.real.config import RealDataConfig
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
