"""Visual Genome region-description adapter on a small fixture in the release's JSON format."""

from __future__ import annotations

import json
import re

import pytest

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.overlap import shared_image_numbers, without_images_of
from vlrepro.data.real.visual_genome import load_visual_genome, visual_genome_from_config
from vlrepro.data.records import Record, Split, load_split, save_split

IMAGE_DATA = [
    {"width": 800, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg", "height": 600,
     "image_id": 1, "coco_id": None, "flickr_id": None},
    {"width": 640, "url": "https://cs.stanford.edu/people/rak248/VG_100K/10.jpg", "height": 480,
     "image_id": 10, "coco_id": 123, "flickr_id": 456},
]


def _region(rid, image_id, phrase, x, y, w, h):
    return {"region_id": rid, "width": w, "height": h, "image_id": image_id, "phrase": phrase, "y": y, "x": x}


REGIONS = [
    {"regions": [
        _region(1382, 1, "the clock is green in colour", 421, 57, 82, 139),
        _region(1383, 1, "shade is along the street ", 0, 500, 200, 150),  # bottom 650 > 600: clipped
        _region(1384, 1, "a flat line", 10, 10, 0, 5),  # zero width
        _region(1385, 1, "nowhere", 900, 10, 20, 20),  # right of the image
        _region(1386, 1, "   ", 10, 10, 20, 20),  # empty phrase
        _region(1387, 1, "a sliver", 799.5, 10, 30, 20),  # 0.5 px inside
    ], "id": 1},
    {"regions": [_region(5, 10, "man with a hat", 1.5, 2.5, 10, 20)], "id": 10},
]


def write_vg(root, image_data=IMAGE_DATA, regions=REGIONS):
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_data.json").write_text(json.dumps(image_data))
    (root / "region_descriptions.json").write_text(json.dumps(regions))
    return root


def test_one_record_per_kept_region(tmp_path):
    split = load_visual_genome(write_vg(tmp_path))["train"]
    assert [r.meta["region_id"] for r in split.records] == [1382, 1383, 5]
    r = split.records[0]
    # x=421, y=57, w=82, h=139 -> (421, 57, 503, 196)
    assert r.boxes == ((421.0, 57.0, 503.0, 196.0),)
    assert (r.image_id, r.image, r.width, r.height) == ("1", "VG_100K_2/1.jpg", 800, 600)
    assert r.text == "the clock is green in colour" and r.phrase_text(0) == r.text and r.phrases[0].box_ids == (0,)
    clipped = split.records[1]
    assert clipped.text == "shade is along the street" and clipped.boxes == ((0.0, 500.0, 200.0, 600.0),)
    last = split.records[2]
    assert last.image == "VG_100K/10.jpg" and last.boxes == ((1.5, 2.5, 11.5, 22.5),)
    # image 10 is COCO's 123 and Flickr's 456; image 1 is neither
    assert last.meta == {"region_id": 5, "coco_id": 123, "flickr_id": 456} and r.meta == {"region_id": 1382}
    assert split.meta["dropped"] == {"degenerate": 1, "outside": 1, "too_small": 1, "empty_phrase": 1}
    assert split.meta["clipped"] == 1 and split.meta["n_regions"] == 7
    assert split.meta["image_root"] == str(tmp_path)
    save_split(tmp_path / "saved", split)
    again = load_split(tmp_path / "saved")
    assert again.records == split.records and again.meta == split.meta


def test_min_size_and_config(tmp_path):
    write_vg(tmp_path)
    split = load_visual_genome(tmp_path, min_size=0.25)["train"]
    assert 1387 in [r.meta["region_id"] for r in split.records]
    assert split.records[-2].boxes == ((799.5, 10.0, 800.0, 30.0),)
    assert visual_genome_from_config(RealDataConfig(visual_genome=tmp_path))["train"].meta["n_regions"] == 7
    with pytest.raises(DatasetError, match="data.real.visual_genome is not set"):
        visual_genome_from_config(RealDataConfig())


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'image_data.json'))}: missing; "
                                          r"expected .*image_data\.json"):
        load_visual_genome(tmp_path)
    write_vg(tmp_path)
    (tmp_path / "region_descriptions.json").unlink()
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'region_descriptions.json'))}: missing"):
        load_visual_genome(tmp_path)


@pytest.mark.parametrize(
    ("image_data", "regions", "pattern"),
    [
        (IMAGE_DATA, [{"regions": [{"region_id": 1, "phrase": "a", "y": 1, "width": 2, "height": 2}], "id": 1}],
         r"region_descriptions\.json: \[0\] region 0: no 'x'"),
        (IMAGE_DATA, [{"regions": [_region(1, 1, "a", "left", 1, 2, 2)], "id": 1}],
         r"region_descriptions\.json: \[0\] region 0: 'x' is 'left', expected a number"),
        (IMAGE_DATA, [{"regions": [], "id": 99}], r"region_descriptions\.json: \[0\]: image 99 is not in .*image_data"),
        (IMAGE_DATA, {"regions": []}, r"region_descriptions\.json: expected a JSON list"),
        ([{**IMAGE_DATA[0], "url": "https://x/images/1.jpg"}], REGIONS, r"image_data\.json: \[0\]: url .* VG_100K"),
        ([{**IMAGE_DATA[0], "width": 800.5}], REGIONS, r"image_data\.json: \[0\]: 'width' is 800\.5"),
    ],
)
def test_malformed_entries_are_named(tmp_path, image_data, regions, pattern):
    write_vg(tmp_path, image_data, regions)
    with pytest.raises(DatasetError, match=pattern):
        load_visual_genome(tmp_path)


def test_invalid_json_is_named(tmp_path):
    write_vg(tmp_path)
    (tmp_path / "region_descriptions.json").write_text("[{")
    path = re.escape(str(tmp_path / "region_descriptions.json"))
    with pytest.raises(DatasetError, match=rf"^{path}: not valid JSON"):
        load_visual_genome(tmp_path)


def _held_out(dataset, image_id):
    return Split([Record(image_id=image_id, image=f"{image_id}.jpg", width=10, height=10)], meta={"dataset": dataset})


@pytest.mark.parametrize(
    ("held_out", "dropped"),
    [
        ([_held_out("refcoco+", "123")], 1),  # RefCOCO+'s image ids are COCO ids
        ([_held_out("coco_instances", "123")], 1),
        ([_held_out("flickr30k_entities", "456")], 1),  # Flickr30k's are Flickr photo ids
        ([_held_out("flickr30k_entities", "123"), _held_out("refcoco+", "456")], 0),  # the ids of the other source
        ([_held_out("cub", "123"), _held_out(None, "456")], 0),  # datasets that share no image with VG
        ([], 0),
    ],
)
def test_training_regions_of_an_evaluated_image_are_left_out(tmp_path, held_out, dropped):
    split = load_visual_genome(write_vg(tmp_path))["train"]
    kept = without_images_of(split, held_out)
    assert len(kept.records) == len(split.records) - dropped
    assert all(r.image_id != "10" for r in kept.records) == bool(dropped)
    assert kept.meta["held_out_images"] == {"images": dropped, "records": dropped}
    assert kept.meta["n_regions"] == split.meta["n_regions"]


def test_a_photo_that_several_training_sets_hold_gets_one_number(tmp_path):
    vg = load_visual_genome(write_vg(tmp_path))["train"]  # VG 10 is COCO's 123 and Flickr's 456; VG 1 neither
    coco = Split([_held_out("", i).records[0] for i in ("7", "123", "7")], meta={"dataset": "coco_karpathy"})
    flickr = _held_out("flickr30k_entities", "456")
    world = Split([Record(image_id=str(i), image=i, width=8, height=8) for i in (0, 1)])
    numbers = shared_image_numbers([coco, vg, flickr, world, world])
    assert numbers[0] == {"7.jpg": 0, "123.jpg": 1}
    assert numbers[1] == {vg.records[0].image: 2, vg.records[2].image: 1}  # VG 10 is COCO's 123
    assert numbers[2] == {"456.jpg": 1}  # through VG 10's flickr_id
    assert numbers[3] == {0: 3, 1: 4} and numbers[4] == {0: 5, 1: 6}  # world images are never shared
