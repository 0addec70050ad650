"""COCO adapters on fixtures in the real formats: Karpathy's dataset_coco.json and instances_*.json.

COCO box AP (``vlrepro.metrics.coco``) is tested in test_metrics_coco.py on the same fixtures.
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from vlrepro.data.real.coco import (
    coco_instances_from_config,
    coco_karpathy_from_config,
    load_coco_instances,
    load_coco_karpathy,
)
from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError


def karpathy_doc() -> dict:
    def image(k, folder, split):
        name = f"COCO_{folder}_{k:012d}.jpg"
        sents = [{"raw": f"A bird number {k}. ", "tokens": ["a", "bird"], "imgid": k, "sentid": 10 * k},
                 {"raw": f"Another caption {k}\n", "tokens": ["another"], "imgid": k, "sentid": 10 * k + 1}]
        return {"filepath": folder, "filename": name, "imgid": k, "split": split, "sentences": sents,
                "cocoid": 1000 + k, "sentids": [10 * k, 10 * k + 1]}

    return {"images": [image(0, "train2014", "train"), image(1, "val2014", "restval"),
                       image(2, "val2014", "val"), image(3, "val2014", "test"), image(4, "val2014", "test")],
            "dataset": "coco"}


@pytest.fixture
def karpathy(tmp_path) -> Path:
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(karpathy_doc()))
    return path


def test_karpathy_records_per_caption(karpathy):
    splits = load_coco_karpathy(karpathy, "/data/coco")
    assert [len(splits[s].records) for s in ("train", "val", "test")] == [4, 2, 4]  # restval joins train
    r = splits["val"].records[1]
    assert r.text == "Another caption 2"  # raw caption, surrounding whitespace dropped
    assert r.image == "val2014/COCO_val2014_000000000002.jpg"
    assert r.image_id == "1002" and r.boxes == () and (r.width, r.height) == (0, 0)
    assert r.meta == {"cocoid": 1002, "sent": 1, "sentid": 21, "karpathy_split": "val"}
    assert {r.meta["karpathy_split"] for r in splits["train"].records} == {"train", "restval"}
    assert splits["test"].meta["image_root"] == "/data/coco"
    without = load_coco_karpathy(karpathy, restval_into_train=False)
    assert len(without["train"].records) == 2 and without["train"].meta["image_root"] is None


def test_karpathy_reads_sizes_on_request(karpathy, tmp_path):
    for img in karpathy_doc()["images"]:
        (tmp_path / img["filepath"]).mkdir(exist_ok=True)
        Image.new("RGB", (30 + img["imgid"], 20)).save(tmp_path / img["filepath"] / img["filename"])
    r = load_coco_karpathy(karpathy, tmp_path, read_sizes=True)["test"].records[0]
    assert (r.width, r.height) == (33, 20)
    with pytest.raises(ValueError, match="needs image_root"):
        load_coco_karpathy(karpathy, read_sizes=True)
    (tmp_path / "val2014" / "COCO_val2014_000000000004.jpg").unlink()
    with pytest.raises(DatasetError, match=r"COCO_val2014_000000000004\.jpg: missing; expected the image"):
        load_coco_karpathy(karpathy, tmp_path, read_sizes=True)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["images"][2].update(split="dev"), r"images\[2\]: split 'dev'"),
    (lambda d: d["images"][3].pop("cocoid"), r"images\[3\]: missing key\(s\) \['cocoid'\]"),
    (lambda d: d["images"][0]["sentences"][1].pop("raw"), r"images\[0\]\.sentences\[1\]: missing"),
    (lambda d: d.pop("images"), "expected a JSON object with an 'images' list"),
])
def test_karpathy_malformed(tmp_path, edit, message):
    doc = karpathy_doc()
    edit(doc)
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=rf"dataset_coco\.json: .*{message}"):
        load_coco_karpathy(path)


def test_karpathy_missing_or_invalid_file(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset_coco\.json: missing; expected Karpathy"):
        load_coco_karpathy(tmp_path / "dataset_coco.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        load_coco_karpathy(tmp_path / "bad.json")


def ann(i, image_id, category_id, bbox, iscrowd=0):
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": iscrowd, "segmentation": []}


def instances_doc(annotations) -> dict:
    images = [{"id": k, "file_name": f"COCO_val2014_{k:012d}.jpg", "width": 640, "height": 480} for k in (7, 8, 9)]
    cats = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 3, "name": "car", "supercategory": "v"},
            {"id": 90, "name": "toothbrush", "supercategory": "indoor"}]
    return {"info": {}, "images": images, "annotations": annotations, "categories": cats}


# one small (area 400 < 32²), one medium (2,500), one large (12,000 > 96²) object; a crowd region; image 9 empty
GT = [ann(1, 7, 1, [10.0, 20.0, 20.0, 20.0]), ann(2, 7, 3, [100.5, 50.0, 50.0, 50.0]),
      ann(3, 8, 90, [200.0, 100.0, 120.0, 100.0]), ann(4, 8, 1, [0.0, 0.0, 60.0, 40.0], iscrowd=1)]


@pytest.fixture
def instances(tmp_path) -> Path:
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(instances_doc(GT)))
    return path


def test_instances_records(instances, tmp_path):
    doc = instances_doc([*GT, ann(5, 9, 3, [5.0, 5.0, 0.0, 10.0])])  # a zero-width box is skipped
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(doc))
    split = load_coco_instances(path, "/data/coco")
    assert [r.image_id for r in split.records] == ["7", "8", "9"]
    r7, r8, r9 = split.records
    assert r7.boxes == ((10.0, 20.0, 30.0, 40.0), (100.5, 50.0, 150.5, 100.0))  # xywh -> xyxy
    assert r7.labels == (1, 3) and r7.text == ""
    assert r7.image == "val2014/COCO_val2014_000000000007.jpg" and (r7.width, r7.height) == (640, 480)
    # the crowd region of image 8 is not an object: it is kept apart in meta, as xyxy
    assert r8.boxes == ((200.0, 100.0, 320.0, 200.0),) and r8.labels == (90,)
    assert r8.meta == {"cocoid": 8, "ann_ids": [3], "crowd_boxes": [[0.0, 0.0, 60.0, 40.0]], "crowd_labels": [1],
                       "crowd_ann_ids": [4]}
    assert r7.meta["crowd_boxes"] == [] and r7.meta["ann_ids"] == [1, 2]
    assert r9.boxes == () and r9.labels == ()
    assert split.meta["skipped_degenerate_boxes"] == 1
    assert split.meta["image_root"] == "/data/coco"
    assert [c["name"] for c in split.meta["categories"]] == ["person", "car", "toothbrush"]
    assert load_coco_instances(path, subset="").records[0].image == "COCO_val2014_000000000007.jpg"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["annotations"].append(ann(9, 42, 1, [0, 0, 1, 1])), r"annotations\[4\]: image_id 42 is not"),
    (lambda d: d["annotations"].append(ann(9, 7, 2, [0, 0, 1, 1])), r"annotations\[4\]: category_id 2 is not"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]: bbox must be \[x, y, w, h\]"),
    (lambda d: d["images"][1].pop("width"), r"images\[1\]: missing key\(s\) \['width'\]"),
    (lambda d: d.pop("categories"), "expected a COCO instances file"),
])
def test_instances_malformed(tmp_path, edit, message):
    doc = instances_doc([dict(a) for a in GT])
    edit(doc)
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=rf"instances_val2014\.json: .*{message}"):
        load_coco_instances(path)


def test_from_config(karpathy, instances):
    cfg = RealDataConfig(coco_karpathy=karpathy, coco_instances=instances, coco_images=Path("/data/coco"))
    assert len(coco_karpathy_from_config(cfg)["train"].records) == 4
    assert coco_instances_from_config(cfg).meta["image_root"] == "/data/coco"
    with pytest.raises(DatasetError, match="data.real.coco_karpathy is not set"):
        coco_karpathy_from_config(RealDataConfig())
    with pytest.raises(DatasetError, match="data.real.coco_instances is not set"):
        coco_instances_from_config(RealDataConfig())
