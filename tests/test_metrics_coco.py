"""COCO box AP (pycocotools' COCOeval) on instances fixtures in the real format (from test_real_coco)."""

import json
from pathlib import Path

import pytest
from test_real_coco import GT, ann, instances_doc

from vlrepro.data.real.errors import DatasetError
from vlrepro.metrics.coco import AP_KEYS, coco_box_ap


@pytest.fixture
def instances(tmp_path) -> Path:
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(instances_doc(GT)))
    return path


def as_detection(a, dx=0.0, score=0.9):
    x, y, w, h = a["bbox"]
    return {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + dx, y, w, h], "score": score}


def test_ap_is_one_when_detections_equal_ground_truth(instances):
    detections = [as_detection(a) for a in GT if not a["iscrowd"]]
    before = [dict(d) for d in detections]
    ap = coco_box_ap(instances, detections)
    assert tuple(ap) == AP_KEYS
    assert ap == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "APs": 1.0, "APm": 1.0, "APl": 1.0})
    assert detections == before  # pycocotools' loadRes must not write into the caller's dicts


def test_detection_on_a_crowd_region_is_ignored(instances):
    # GT's annotation 4 is a crowd region: a confident detection on it is neither a hit nor a false positive
    crowd = next(a for a in GT if a["iscrowd"])
    detections = [as_detection(a) for a in GT if not a["iscrowd"]] + [as_detection(crowd, score=0.99)]
    assert coco_box_ap(instances, detections)["AP"] == pytest.approx(1.0)


def test_ap_of_a_shifted_box(tmp_path):
    # One 100x100 box; the detection is shifted 20 px right: IoU = 80*100 / (120*100) = 2/3, so it matches at
    # the IoU thresholds .50, .55, .60, .65 and misses at .70 ... .95: AP = 4/10.
    path = tmp_path / "instances_val2014.json"
    gt = ann(1, 7, 3, [100.0, 100.0, 100.0, 100.0])
    path.write_text(json.dumps(instances_doc([gt])))
    ap = coco_box_ap(path, [as_detection(gt, dx=20.0)])
    assert ap["AP"] == pytest.approx(0.4) and ap["APl"] == pytest.approx(0.4)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == 0.0
    assert ap["APs"] == -1.0 and ap["APm"] == -1.0  # no ground truth in those area ranges (pycocotools' -1)


def test_ap_without_detections_is_zero(instances):
    ap = coco_box_ap(instances, [])
    assert ap["AP"] == 0.0 and ap["APs"] == 0.0


def test_ap_checks_detections_and_ground_truth(instances, tmp_path):
    with pytest.raises(ValueError, match=r"detections\[0\]: image_id 42"):
        coco_box_ap(instances, [{"image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match=r"detections\[0\]: missing \['score'\]"):
        coco_box_ap(instances, [{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    doc = instances_doc([dict(a) for a in GT])
    del doc["annotations"][1]["area"]
    path = tmp_path / "instances_bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"instances_bad\.json: annotations\[1\].*missing key\(s\) \['area'\]"):
        coco_box_ap(path, [])
