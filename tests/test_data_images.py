"""Real images as model inputs (vlrepro.data.images): letterboxing of images, boxes and masks by hand, the way
back to original pixels, and the errors for missing and corrupt files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vlrepro.data.images import (
    PAD,
    Letterbox,
    boxes_to_original,
    check_images,
    letterbox_mask,
    load_image,
)
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.records import Record


def _record(name: str, width: int, height: int, box=(30.0, 50.0, 150.0, 250.0)) -> Record:
    return Record(image_id=name.split(".")[0], image=name, width=width, height=height, text="the red thing",
                  boxes=(box,))  # fmt: skip


def _jpeg(path, width: int, height: int, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path, quality=95)


def test_letterbox_of_boxes_by_hand():
    # landscape 640x480 into 64: scale 0.1, resized 64x48, 8 px of padding above and below
    lb = Letterbox.fit(640, 480, 64)
    assert (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y) == (64, 48, 0, 8)
    np.testing.assert_allclose(lb.to_input([[10.5, 20.0, 40.75, 60.0]]), [[1.05, 10.0, 4.075, 14.0]])
    # portrait 300x500 into 128: height 128 (scale 0.256), width round(76.8) = 77, pad_x (128 - 77) // 2 = 25;
    # x scales by 77/300 (the rounded width), y by 128/500
    lb = Letterbox.fit(300, 500, 128)
    assert (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y) == (77, 128, 25, 0)
    np.testing.assert_allclose(lb.to_input([[30, 50, 150, 250]]), [[32.7, 12.8, 63.5, 64.0]])


def test_round_trip_to_original_pixels_and_clipping():
    boxes = np.array([[30.0, 50.0, 150.0, 250.0], [0.0, 0.0, 300.0, 500.0], [299.0, 1.0, 300.0, 2.5]])
    lb = Letterbox.fit(300, 500, 128)
    np.testing.assert_allclose(lb.to_original(lb.to_input(boxes)), boxes, atol=1e-9)
    # a predicted box reaching into the padding (x < 25 or x > 102 in the input) is cut at the image's edges
    np.testing.assert_allclose(lb.to_original([[0.0, -5.0, 128.0, 64.0]]), [[0.0, 0.0, 300.0, 250.0]])
    # batched: one Letterbox row per box, images of different shapes
    other = Letterbox.fit(640, 480, 128)
    rows = np.array([lb.as_row(), other.as_row()])
    inputs = np.concatenate([lb.to_input(boxes[:1]), other.to_input([[10.5, 20.0, 40.75, 60.0]])])
    np.testing.assert_allclose(boxes_to_original(inputs, rows), [boxes[0], [10.5, 20.0, 40.75, 60.0]], atol=1e-9)


def test_load_image_letterboxes_pixels_and_masks(tmp_path):
    _jpeg(tmp_path / "img" / "a.jpg", 300, 500)
    pixels, lb = load_image({"image_root": str(tmp_path / "img")}, _record("a.jpg", 300, 500), 128, "split x")
    assert pixels.shape == (128, 128, 3) and pixels.dtype == np.uint8 and lb == Letterbox.fit(300, 500, 128)
    assert tuple(pixels[64, 10]) == PAD and tuple(pixels[64, 120]) == PAD  # left / right padding
    assert abs(int(pixels[64, 64, 0]) - 200) <= 3 and abs(int(pixels[64, 64, 1]) - 30) <= 3  # the image (JPEG)
    mask = np.zeros((500, 300), dtype=bool)
    mask[250:, :150] = True  # bottom-left quarter
    out = letterbox_mask(mask, lb)
    assert out.shape == (128, 128) and out.dtype == bool
    assert out[100, 40] and not out[100, 70] and not out[30, 40] and not out[100, 10]  # inside, right, above, pad
    assert out.sum() == pytest.approx(128 * 77 / 4, rel=0.05)


def test_missing_and_corrupt_images_name_the_file_record_split_and_key(tmp_path):
    meta = {"image_root": str(tmp_path / "train2014"), "dataset": "refcoco"}
    with pytest.raises(DatasetError) as err:
        load_image(meta, _record("COCO_1.jpg", 300, 500), 64, "data/real/refcoco/val")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'train2014' / 'COCO_1.jpg'}: missing")
    assert "record COCO_1" in msg and "data/real/refcoco/val" in msg and "data.real.coco_train2014" in msg
    bad = tmp_path / "train2014" / "COCO_2.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    corrupt = rf"^{re.escape(str(bad))}: not a readable image .*record COCO_2 .*data/real/refcoco/val"
    with pytest.raises(DatasetError, match=corrupt):
        load_image(meta, _record("COCO_2.jpg", 300, 500), 64, "data/real/refcoco/val")
    _jpeg(tmp_path / "train2014" / "COCO_3.jpg", 500, 300)  # annotations say 300x500
    with pytest.raises(DatasetError, match=r"COCO_3.jpg: image is 500x300 px but the annotations .* say 300x500"):
        load_image(meta, _record("COCO_3.jpg", 300, 500), 64, "data/real/refcoco/val")

    # decoded in a DataLoader worker, the error reaches the run with the same message, not the worker's traceback
    loader = torch.utils.data.DataLoader([_record("COCO_2.jpg", 300, 500)], batch_size=None, num_workers=1,
                                         collate_fn=lambda r: load_image(meta, r, 64, "data/real/refcoco/val"))
    with pytest.raises(DatasetError, match=corrupt) as err:
        next(iter(loader))
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


def test_missing_images_stop_the_run_with_their_count_and_first_paths(tmp_path):
    root = tmp_path / "train2014"
    records = [_record(f"COCO_{i}.jpg", 300, 500) for i in range(8)] + [_record("COCO_0.jpg", 300, 500)]
    _jpeg(root / "COCO_0.jpg", 300, 500)
    meta = {"image_root": str(root), "dataset": "refcocog"}
    with pytest.raises(DatasetError) as err:
        check_images(meta, records, "data/real/refcocog/train")
    msg = str(err.value)
    assert msg.startswith("data/real/refcocog/train: 7 of 8 images missing under")  # distinct files, not records
    assert all(str(root / f"COCO_{i}.jpg") in msg for i in range(1, 6)) and str(root / "COCO_6.jpg") not in msg
    assert "and 2 more" in msg and "data.real.coco_train2014" in msg and "not dropped" in msg
    check_images(meta, records[:1], "data/real/refcocog/train")  # all present: no error
    with pytest.raises(DatasetError, match=r"nowhere/: missing.*data\.real\.coco_train2014"):
        check_images({**meta, "image_root": str(tmp_path / "nowhere")}, records, "data/real/refcocog/train")
    with pytest.raises(DatasetError, match=r"no image root; set data\.real\.flickr30k_images"):
        check_images({"image_root": None, "dataset": "flickr30k_entities"}, records, "x")
