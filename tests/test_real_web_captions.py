"""The web caption adapter (BLIP's pre-training annotation format) on fixture files the test writes."""

from __future__ import annotations

import json

import pytest

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.suite import build_real
from vlrepro.data.real.web_captions import load_web_captions, web_captions_from_config
from vlrepro.data.records import load_split

ENTRIES = [
    {"image": "cc3m/00001.jpg", "caption": "a dog  runs on the beach\n"},
    {"image": "cc3m/00002.jpg", "caption": ["two cats", "  "]},  # several captions, one empty
    {"image": "sbu/3.jpg", "caption": "sunset over the sea", "url": "ignored"},
]


def test_one_record_per_caption_with_the_image_path(tmp_path):
    path = tmp_path / "ccs.json"
    path.write_text(json.dumps(ENTRIES))
    split = load_web_captions(path)["train"]
    assert [(r.image, r.text) for r in split.records] == [("cc3m/00001.jpg", "a dog runs on the beach"),
                                                          ("cc3m/00002.jpg", "two cats"),
                                                          ("sbu/3.jpg", "sunset over the sea")]  # fmt: skip
    assert split.meta["image_root"] == str(tmp_path) and split.meta["empty"] == 1  # the JSON's folder by default
    assert (split.records[0].width, split.records[0].height) == (0, 0)  # sizes are not read
    assert load_web_captions(path, tmp_path / "images")["train"].meta["image_root"] == str(tmp_path / "images")


@pytest.mark.parametrize(("doc", "pattern"), [
    ({"images": []}, "got a JSON dict; expected a JSON list"),
    ([{"image": "a.jpg"}], r"\[0\]: missing key\(s\) \['caption'\]"),
    ([{"image": 3, "caption": "x"}], r"\[0\]: 'image' must be a path"),
    ([{"image": "a.jpg", "caption": ["x", 2]}], r"\[0\]: 'image' must be a path and 'caption' a string"),
])  # fmt: skip
def test_malformed_files_are_named(tmp_path, doc, pattern):
    path = tmp_path / "web.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=rf"{tmp_path}/web\.json: .*{pattern}"):
        load_web_captions(path)


def test_config_and_the_data_stage(tmp_path):
    with pytest.raises(DatasetError, match="data.real.web_captions is not set"):
        web_captions_from_config(RealDataConfig())
    with pytest.raises(DatasetError, match="missing"):
        web_captions_from_config(RealDataConfig(web_captions=tmp_path / "nope.json"))
    (tmp_path / "web.json").write_text(json.dumps(ENTRIES))
    counts = build_real(RealDataConfig(web_captions=tmp_path / "web.json", web_images=tmp_path), tmp_path / "real")
    assert counts == {"web_captions": {"train": 3}}
    assert len(load_split(tmp_path / "real" / "web_captions" / "train").records) == 3
