"""RefCOCO/+/g and refclef adapter on small fixtures in the refer toolkit's on-disk format."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct

import pytest

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.refer import load_refer, refer_from_config
from vlrepro.data.records import load_split, save_split


def py2_pickle(obj) -> bytes:
    """Protocol 2 as Python 2 wrote the refs: ``str`` as 8-bit SHORT_BINSTRING/BINSTRING (UTF-8 bytes here)."""

    def enc(o) -> bytes:
        if o is None:
            return b"N"
        if o is True or o is False:
            return b"\x88" if o else b"\x89"
        if isinstance(o, int):
            if 0 <= o < 256:
                return b"K" + bytes([o])
            if 0 <= o < 65536:
                return b"M" + struct.pack("<H", o)
            return b"J" + struct.pack("<i", o)
        if isinstance(o, float):
            return b"G" + struct.pack(">d", o)
        if isinstance(o, str):
            raw = o.encode("utf-8")
            return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw
        if isinstance(o, list):
            return b"]" + (b"(" + b"".join(map(enc, o)) + b"e" if o else b"")
        if isinstance(o, dict):
            return b"}" + (b"(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u" if o else b"")
        raise TypeError(type(o))

    return b"\x80\x02" + enc(obj) + b"."


def _ref(ref_id, ann_id, image_id, split, sents, cat=1):
    sentences = [
        {"tokens": s.split(), "raw": s.capitalize() + ".", "sent_id": ref_id * 10 + k, "sent": s}
        for k, s in enumerate(sents)
    ]
    return {"image_id": image_id, "split": split, "sentences": sentences, "file_name": f"x_{ann_id}.jpg",
            "category_id": cat, "ann_id": ann_id, "sent_ids": [s["sent_id"] for s in sentences], "ref_id": ref_id}


IMAGES = [
    {"file_name": "COCO_train2014_000000000009.jpg", "height": 480, "width": 640, "id": 9},
    {"file_name": "COCO_train2014_000000000025.jpg", "height": 426, "width": 640, "id": 25},
]
ANNS = [
    {"segmentation": [[10.5, 20.0, 40.75, 20.0, 40.75, 60.0]], "area": 600.0, "iscrowd": 0, "image_id": 9,
     "bbox": [10.5, 20.0, 30.25, 40.0], "category_id": 1, "id": 100},
    {"segmentation": [[0, 0, 5, 0, 5, 5]], "area": 25.0, "iscrowd": 0, "image_id": 9,
     "bbox": [0, 0, 640, 480], "category_id": 18, "id": 101},
    {"segmentation": [[1, 1, 2, 2]], "area": 0.0, "iscrowd": 0, "image_id": 25,
     "bbox": [5, 5, 0, 7], "category_id": 3, "id": 102},
]
REFS = [
    _ref(1, 100, 9, "train", ["man on the left", "guy in red"]),
    _ref(2, 101, 9, "testA", ["the whole dog"], cat=18),
    _ref(3, 100, 9, "testB", ["left man"]),
    _ref(4, 101, 9, "val", ["dog"], cat=18),
    _ref(5, 102, 25, "train", ["zero width thing"], cat=3),
]


def write_refer(root, dataset="refcoco", split_by="unc", refs=REFS, images=IMAGES, anns=ANNS, py2=False):
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    instances = {"images": images, "annotations": anns,
                 "categories": [{"supercategory": "person", "id": 1, "name": "person"}]}
    (folder / "instances.json").write_text(json.dumps(instances))
    data = py2_pickle(refs) if py2 else pickle.dumps(refs, protocol=2)
    (folder / f"refs({split_by}).p").write_bytes(data)
    return root


def test_one_record_per_sentence_with_xyxy_boxes(tmp_path):
    splits = load_refer(write_refer(tmp_path), "refcoco", "unc", image_root=tmp_path / "train2014")
    assert sorted(splits) == ["testA", "testB", "train", "val"]
    train = splits["train"]
    assert [r.text for r in train.records] == ["man on the left", "guy in red"]
    r = train.records[0]
    # bbox [10.5, 20, 30.25, 40] -> x1 = 10.5 + 30.25, y1 = 20 + 40
    assert r.boxes == ((10.5, 20.0, 40.75, 60.0),)
    assert r.labels == (1,)
    assert r.image == "COCO_train2014_000000000009.jpg" and r.image_id == "9"
    assert (r.width, r.height) == (640, 480)
    assert len(r.phrases) == 1 and r.phrase_text(0) == "man on the left" and r.phrases[0].box_ids == (0,)
    assert r.meta == {"ref_id": 1, "ann_id": 100, "sent_id": 10, "split": "train"}
    assert train.records[1].meta["sent_id"] == 11
    assert splits["testA"].records[0].boxes == ((0.0, 0.0, 640.0, 480.0),)
    assert splits["testA"].records[0].labels == (18,)
    assert train.meta["image_root"] == str(tmp_path / "train2014")
    assert train.images is None and train.instances is None
    save_split(tmp_path / "saved", train)
    again = load_split(tmp_path / "saved")
    assert again.records == train.records and again.meta == train.meta


def test_degenerate_boxes_are_dropped_and_counted(tmp_path):
    train = load_refer(write_refer(tmp_path), "refcoco", "unc")["train"]
    assert all(r.meta["ann_id"] != 102 for r in train.records)
    assert train.meta["dropped"] == {"degenerate_box": 1, "empty_sentence": 0}
    assert train.meta["n_refs"] == 2


def test_each_split_lists_the_objects_of_its_images(tmp_path):
    # the scene a random-object control picks from: every annotated object of the split's images
    splits = load_refer(write_refer(tmp_path), "refcoco", "unc")
    assert splits["train"].meta["objects"] == {"9": [[10.5, 20.0, 40.75, 60.0], [0.0, 0.0, 640.0, 480.0]], "25": []}
    assert splits["val"].meta["objects"] == {"9": [[10.5, 20.0, 40.75, 60.0], [0.0, 0.0, 640.0, 480.0]]}
    anns = [{k: v for k, v in ANNS[0].items() if k != "image_id"}]
    with pytest.raises(DatasetError, match=r"annotations\[0\]: no 'image_id'"):
        load_refer(write_refer(tmp_path, anns=anns), "refcoco", "unc")


def test_python2_pickle_with_utf8_text(tmp_path):
    refs = [_ref(1, 100, 9, "val", ["caf\u00e9 on the left"])]
    write_refer(tmp_path, "refcoco+", "unc", refs=refs, py2=True)
    val = load_refer(tmp_path, "refcoco+", "unc")["val"]
    assert val.records[0].text == "caf\u00e9 on the left"
    assert val.records[0].meta["ref_id"] == 1


@pytest.mark.parametrize(("split_by", "names"), [("umd", ["test", "train", "val"]), ("google", ["train", "val"])])
def test_refcocog_split_names_kept(tmp_path, split_by, names):
    refs = [_ref(i + 1, 100, 9, s, ["a man"]) for i, s in enumerate(names)]
    write_refer(tmp_path, "refcocog", split_by, refs=refs)
    assert sorted(load_refer(tmp_path, "refcocog", split_by)) == names


def test_refclef_default_and_config_image_roots(tmp_path):
    images = [{"file_name": "25.jpg", "height": 360, "width": 480, "id": 25}]
    anns = [{"segmentation": {"counts": "abc", "size": [360, 480]}, "area": 10, "image_id": 25,
             "bbox": [1, 2, 3, 4], "category_id": 7, "id": 5}]
    refs = [_ref(1, 5, 25, "test", ["sky"], cat=7)]
    write_refer(tmp_path, "refclef", "berkeley", refs=refs, images=images, anns=anns)
    test = load_refer(tmp_path, "refclef", "berkeley")["test"]
    assert test.meta["image_root"] == str(tmp_path / "images" / "saiapr_tc-12")
    assert test.records[0].boxes == ((1.0, 2.0, 4.0, 6.0),) and test.records[0].image == "25.jpg"
    cfg = RealDataConfig(refer=tmp_path, saiapr=tmp_path / "saiapr", coco_train2014=tmp_path / "coco")
    assert refer_from_config(cfg, "refclef", "berkeley")["test"].meta["image_root"] == str(tmp_path / "saiapr")


def test_config_without_refer_path(tmp_path):
    with pytest.raises(DatasetError, match="data.real.refer is not set"):
        refer_from_config(RealDataConfig(), "refcoco", "unc")


def test_missing_refs_file_is_named(tmp_path):
    write_refer(tmp_path)
    os.remove(tmp_path / "refcoco" / "refs(unc).p")
    with pytest.raises(DatasetError) as err:
        load_refer(tmp_path, "refcoco", "unc")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'refcoco' / 'refs(unc).p'}: missing; expected ")
    assert str(tmp_path / "refcoco" / "refs(unc).p") in msg and "Real datasets" in msg


def test_missing_instances_is_named(tmp_path):
    write_refer(tmp_path)
    os.remove(tmp_path / "refcoco" / "instances.json")
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'refcoco' / 'instances.json'))}: missing"):
        load_refer(tmp_path, "refcoco", "unc")


def test_unknown_dataset_or_split_by(tmp_path):
    with pytest.raises(DatasetError, match="refcoco\\+ has no split_by 'google'"):
        load_refer(tmp_path, "refcoco+", "google")
    with pytest.raises(DatasetError, match="unknown refer dataset"):
        load_refer(tmp_path, "refcocoX", "unc")


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda refs, anns: refs[0].update(ann_id=999), r"refs\(unc\)\.p: ref 0 refers to ann_id 999"),
        (lambda refs, anns: refs[1].pop("split"), r"refs\(unc\)\.p: ref 1: no 'split'"),
        (lambda refs, anns: refs[0]["sentences"][0].update(sent=None), r"ref 0 sentence 0: 'sent' is NoneType"),
        (lambda refs, anns: anns[0].update(bbox=[1, 2, 3]), r"instances\.json: annotations\[0\]: bbox .* not \[x, y"),
        (lambda refs, anns: anns[1].pop("id"), r"instances\.json: annotations\[1\]: no 'id'"),
    ],
)
def test_malformed_entries_name_the_file(tmp_path, mutate, pattern):
    refs, anns = json.loads(json.dumps(REFS)), json.loads(json.dumps(ANNS))
    mutate(refs, anns)
    write_refer(tmp_path, refs=refs, anns=anns)
    with pytest.raises(DatasetError, match=pattern):
        load_refer(tmp_path, "refcoco", "unc")


def test_invalid_json_and_wrong_pickle_shape(tmp_path):
    write_refer(tmp_path)
    (tmp_path / "refcoco" / "instances.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"instances\.json: not valid JSON"):
        load_refer(tmp_path, "refcoco", "unc")
    write_refer(tmp_path)
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps({"refs": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: expected a pickled list of refs"):
        load_refer(tmp_path, "refcoco", "unc")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_refs_pickle_is_refused_without_running(tmp_path):
    write_refer(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([REFS[0], _Evil(marker)], protocol=2))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: refused to unpickle global \w+\.system"):
        load_refer(tmp_path, "refcoco", "unc")
    assert not marker.exists()
