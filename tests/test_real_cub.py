"""CUB-200-2011 adapter on a small fixture written in the official on-disk format."""

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.cub import cub_from_config, load_cub, load_cub_mask, stratified_holdout
from vlrepro.data.real.errors import DatasetError

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
N_TRAIN, N_TEST = 8, 4  # per class: 24 official training images, 12 test images
W, H = 20, 16


def write_cub(root: Path, seg_dir: Path | None) -> Path:
    """Write a CUB_200_2011/ folder; image k (1-based) has box (k, 1, 3, 2.5) and a soft mask."""
    root.mkdir(parents=True)
    images, labels, split, boxes = [], [], [], []
    k = 0
    for c, cls in enumerate(CLASSES, start=1):
        for j in range(N_TRAIN + N_TEST):
            k += 1
            rel = f"{cls}/{cls.split('.')[1]}_{j:04d}_{k}.jpg"
            images.append(f"{k} {rel}")
            labels.append(f"{k} {c}")
            split.append(f"{k} {int(j < N_TRAIN)}")
            boxes.append(f"{k} {float(k)} 1.0 3.0 2.5")
            (root / "images" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (W, H), (k, 0, 0)).save(root / "images" / rel)
            if seg_dir is not None:
                mask = np.zeros((H, W), np.uint8)
                mask[2:6, 3:9] = [0, 100, 127, 128, 200, 255]  # soft levels along each row
                (seg_dir / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask, "L").save(seg_dir / Path(rel).with_suffix(".png"))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c} {n}" for c, n in enumerate(CLASSES, start=1)) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return root


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cub")
    return write_cub(base / "CUB_200_2011", base / "segmentations")


@pytest.fixture
def bare(tmp_path) -> Path:
    """A fixture without masks, to be damaged by a test."""
    return write_cub(tmp_path / "CUB_200_2011", None)


def test_records_boxes_labels_text(cub):
    splits = load_cub(cub)
    by_id = {r.image_id: r for s in splits.values() for r in s.records}
    assert len(by_id) == 3 * (N_TRAIN + N_TEST)
    r = by_id["14"]  # class 2's second image
    assert r.boxes == ((14.0, 1.0, 17.0, 3.5),)  # x, y, x + w, y + h
    assert r.labels == (1,)
    assert r.text == "Laysan Albatross"
    assert by_id["1"].text == "Black footed Albatross"
    assert (r.width, r.height) == (W, H)
    assert r.image == "002.Laysan_Albatross/Laysan_Albatross_0001_14.jpg"
    assert r.meta == {"image_id": 14, "mask": "002.Laysan_Albatross/Laysan_Albatross_0001_14.png"}
    assert (Path(splits["train"].meta["image_root"]) / r.image).is_file()
    assert splits["test"].meta["classes"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert all(s.images is None and s.instances is None for s in splits.values())


def test_split_sizes_follow_the_paper_proportion(cub):
    splits = load_cub(cub, seed=0)
    n_val = round(3 * N_TRAIN * 994 / 5994)  # 4 of 24
    assert [len(splits[s].records) for s in ("train", "val", "test")] == [3 * N_TRAIN - n_val, n_val, 3 * N_TEST]
    ids = {s: {r.image_id for r in splits[s].records} for s in splits}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] | ids["val"]) & ids["test"]
    official_test = {str(c * 12 + j + 1) for c in range(3) for j in range(N_TRAIN, N_TRAIN + N_TEST)}
    assert ids["test"] == official_test
    per_class = Counter(r.labels[0] for r in splits["val"].records)
    assert sorted(per_class.values()) == [1, 1, 2]  # stratified: 4 * 8/24 = 1.33 per class


def test_split_is_reproducible_by_seed(cub):
    def val(seed):
        return [r.image_id for r in load_cub(cub, seed=seed, read_sizes=False)["val"].records]

    assert val(0) == val(0)
    assert any(val(s) != val(0) for s in (1, 2, 3))


def test_explicit_n_val_and_impossible_n_val(cub):
    splits = load_cub(cub, n_val=6, read_sizes=False)
    assert len(splits["val"].records) == 6 and len(splits["train"].records) == 18
    assert len(load_cub(cub, n_val=0, read_sizes=False)["val"].records) == 0
    with pytest.raises(ValueError, match="n_val=24"):
        load_cub(cub, n_val=24, read_sizes=False)


def test_paper_split_sizes_on_cub_shaped_labels():
    # CUB's official training set: 194 species with 30 images and 6 with 29 = 5,994.
    labels = [c for c in range(200) for _ in range(30 if c < 194 else 29)]
    ids = list(range(1, len(labels) + 1))
    held = stratified_holdout(ids, labels, 994, seed=0)
    assert len(held) == 994 and len(ids) - len(held) == 5000
    per_class = Counter(labels[i - 1] for i in held)
    assert set(per_class.values()) <= {4, 5} and len(per_class) == 200
    assert held == stratified_holdout(ids, labels, 994, seed=0)
    assert held != stratified_holdout(ids, labels, 994, seed=1)


def test_masks_are_thresholded_soft_masks(cub):
    splits = load_cub(cub)
    r = splits["test"].records[0]
    mask = load_cub_mask(splits["test"].meta["mask_root"], r)
    assert mask.dtype == bool and mask.shape == (H, W)
    expected = np.zeros((H, W), bool)
    expected[2:6, 6:9] = True  # levels 128, 200, 255 (>= 128, ALA's reference rule)
    assert (mask == expected).all()
    assert load_cub_mask(cub.parent, r, threshold=1).sum() == 4 * 5  # every non-zero level
    assert (load_cub_mask(cub.parent / "segmentations", r) == mask).all()


def test_segmentations_inside_root_are_found(bare):
    seg = bare / "segmentations"
    for r in (r for s in load_cub(bare, read_sizes=False).values() for r in s.records):
        (seg / Path(r.image).parent).mkdir(parents=True, exist_ok=True)
        Image.new("L", (W, H), 255).save(seg / Path(r.image).with_suffix(".png"))
    splits = load_cub(bare)
    assert splits["train"].meta["mask_root"] == str(seg)
    assert load_cub_mask(bare, splits["train"].records[0]).all()


def test_no_segmentations_means_no_masks(bare):
    splits = load_cub(bare)
    r = splits["train"].records[0]
    assert r.meta["mask"] is None and splits["train"].meta["mask_root"] is None
    with pytest.raises(DatasetError, match="no mask"):
        load_cub_mask(bare, r)


def test_missing_mask_is_an_error(cub, tmp_path):
    seg = tmp_path / "segmentations"
    seg.mkdir()
    with pytest.raises(DatasetError, match=r"segmentations/001\.Black_footed_Albatross/.*\.png: missing"):
        load_cub(cub, seg, read_sizes=False)


@pytest.mark.parametrize("name", ["images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt",
                                  "bounding_boxes.txt"])
def test_missing_file_names_it(bare, name):
    (bare / name).unlink()
    with pytest.raises(DatasetError, match=rf"{name}: missing"):
        load_cub(bare)


def test_malformed_line_names_file_line_and_format(bare):
    path = bare / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    lines[2] = "3 1.0 2.0 3.0"
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"bounding_boxes\.txt line 3: expected '<image_id> <x> <y> <w> <h>'"):
        load_cub(bare)


@pytest.mark.parametrize(("name", "line", "message"), [
    ("bounding_boxes.txt", "1 1.0 2.0 abc 4.0", "image 1: expected a number"),
    ("bounding_boxes.txt", "1 1.0 2.0 0.0 4.0", "width and height must be > 0"),
    ("train_test_split.txt", "1 2", "is_training_image must be 0 or 1"),
    ("image_class_labels.txt", "1 7", "image 1 has class 7"),
])
def test_bad_values_name_the_file(bare, name, line, message):
    path = bare / name
    lines = path.read_text().splitlines()
    path.write_text("\n".join([line, *lines[1:]]))
    with pytest.raises(DatasetError, match=rf"{name}: .*{message}"):
        load_cub(bare)


def test_ids_must_match_images_txt(bare):
    path = bare / "image_class_labels.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]))
    with pytest.raises(DatasetError, match=r"image_class_labels\.txt: its image ids differ .*missing \[36\]"):
        load_cub(bare)


def test_missing_image_is_an_error_unless_sizes_are_not_read(bare):
    victim = next((bare / "images").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(victim))}: missing; expected the image"):
        load_cub(bare)
    records = load_cub(bare, read_sizes=False)["test"].records
    assert all((r.width, r.height) == (0, 0) for r in records)


def test_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="CUB_200_2011/ root"):
        load_cub(tmp_path / "nowhere")


def test_from_config(cub):
    cfg = RealDataConfig(cub=cub, cub_segmentations=cub.parent / "segmentations", cub_split_seed=3)
    assert [r.image_id for r in cub_from_config(cfg)["val"].records] == \
        [r.image_id for r in load_cub(cub, seed=3)["val"].records]
    with pytest.raises(DatasetError, match="data.real.cub is not set"):
        cub_from_config(RealDataConfig())
