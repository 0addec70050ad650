"""The whole suite on disk: layout, determinism, split rules, masks, and the data card."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from vlrepro.data.records import load_split
from vlrepro.data.world import vocab
from vlrepro.data.world.card import plot_samples, suite_statistics
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import SETS, build_suite
from vlrepro.io import read_json

TINY = {
    "referring": {"train": 6, "val": 3, "testA": 8, "testB": 8},
    "flickr": {"train": 4, "val": 2, "test": 2},
    "vg": {"train": 4, "val": 2},
    "det": {"train": 30, "test": 20},
    "odinw": {"shots": 2, "test": 4},
    "captions": {"train": 3, "val": 2, "test": 2},
    "web": {"train": 10},
    "cub": {"train": 40, "val": 3, "test": 3},
}


def tiny(seed: int = 0) -> WorldConfig:
    return WorldConfig.model_validate({"seed": seed, **TINY})


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_suite(tiny(), out, progress=False)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_lists_every_split_with_its_counts(suite):
    manifest = read_json(suite / "manifest.json")
    assert {s: set(p) for s, p in manifest["sets"].items()} == {s: set(p) for s, p in SETS.items()}
    for set_name, splits in manifest["sets"].items():
        for split, counts in splits.items():
            data = load_split(suite / set_name / split)
            assert counts == {"images": len(data.images), "records": len(data.records)}
            assert data.instances.dtype == np.uint8 and data.images.shape[1:] == (64, 64, 3)
            assert len(data.meta["scenes"]) == len(data.images)


def test_same_seed_same_bytes_other_seed_other_scenes(suite, tmp_path):
    build_suite(tiny(), tmp_path / "again", progress=False)
    assert files(tmp_path / "again") == files(suite)
    build_suite(tiny(seed=1), tmp_path / "other", progress=False)
    a, b = files(suite), files(tmp_path / "other")
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith("images.npy"))


def test_bytes_do_not_depend_on_the_process(suite, tmp_path):
    """Python salts string hashes per process; nothing generated may depend on them."""
    code = (
        "import sys; from pathlib import Path; from vlrepro.data.world.config import WorldConfig; "
        "from vlrepro.data.world.suite import build_suite; "
        f"build_suite(WorldConfig.model_validate({{'seed': 0, **{TINY!r}}}), Path(sys.argv[1]), progress=False)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub")], check=True, env=env)
    assert files(tmp_path / "sub") == files(suite)


def test_test_a_and_b_split_targets_by_super_category(suite):
    for style in ("refcoco", "refcoco+", "refcocog"):
        for split, super_category in (("testA", "round"), ("testB", "angular")):
            data = load_split(suite / style / split)
            assert data.records
            for r in data.records:
                assert data.meta["scenes"][r.image][r.meta["target"]]["super_category"] == super_category


def test_det_train_has_no_novel_category(suite):
    train, test = load_split(suite / "det" / "train"), load_split(suite / "det" / "test")
    novel = set(train.meta["novel_category_ids"])
    assert novel == {vocab.CATEGORY_NAMES.index(c) for c in WorldConfig().det.novel_categories}
    assert not novel & {label for r in train.records for label in r.labels}
    assert not novel & {o["category_id"] for scene in train.meta["scenes"] for o in scene}
    assert novel & {label for r in test.records for label in r.labels}
    assert [c["novel"] for c in test.meta["categories"]] == [i in novel for i in range(len(vocab.CATEGORIES))]
    assert not set(train.meta["prompts"]) & {vocab.CATEGORY_NAMES[i] for i in novel}
    for r, scene in zip(test.records, test.meta["scenes"], strict=True):  # every object is annotated
        assert list(r.labels) == [o["category_id"] for o in scene]


def test_odinw_is_k_shot_in_a_shifted_domain(suite):
    train = load_split(suite / "odinw" / "train")
    assert len(train.images) == 2 * len(vocab.CATEGORIES)
    for r, scene in zip(train.records, train.meta["scenes"], strict=True):
        assert r.meta["category"] in {o["category"] for o in scene} and r.meta["shot"] in (0, 1)
    assert all(bg["name"] in vocab.SHIFTED_TEXTURES for bg in train.meta["backgrounds"])


@pytest.mark.parametrize("set_name", list(SETS))
def test_boxes_are_the_bounding_boxes_of_the_instance_masks(suite, set_name):
    for split in SETS[set_name]:
        data = load_split(suite / set_name / split)
        for image, scene in enumerate(data.meta["scenes"]):
            ids = np.asarray(data.instances[image])
            assert set(np.unique(ids)) <= set(range(len(scene) + 1))
            for k, o in enumerate(scene):
                ys, xs = np.nonzero(ids == k + 1)
                assert o["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        for r in data.records:
            for b in range(len(r.mask_ids)):
                ys, xs = np.nonzero(data.mask(r, b))
                assert r.boxes[b] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_cub_species_labels_masks_and_look_alikes(suite):
    data = load_split(suite / "cub" / "train")
    species = data.meta["species"]
    assert len(species) == WorldConfig().cub.species
    attrs = ("category", "colour", "pattern")
    one_apart = sum(sum(a[k] != b[k] for k in attrs) == 1 for i, a in enumerate(species) for b in species[i + 1 :])
    assert one_apart >= 4
    for r in data.records:
        label = r.labels[0]
        assert 0 <= label < len(species) and len(r.boxes) == 1
        target = data.meta["scenes"][r.image][r.mask_ids[0]]
        assert tuple(target[k] for k in attrs) == tuple(species[label][k] for k in attrs)
        ys, xs = np.nonzero(data.mask(r))
        assert r.boxes[0] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        round_objects = [o for o in data.meta["scenes"][r.image] if o["super_category"] == "round"]
        assert round_objects == [target]  # distractors never look like a species


def test_data_card(suite):
    stats = suite_statistics(suite)
    assert len(stats) == sum(len(p) for p in SETS.values())
    row = stats.set_index(["set", "split"]).loc[("refcocog", "train")]
    assert row["images"] == 6 and row["boxes/record"] == 1 and row["words/text"] > 4
    assert stats.set_index(["set", "split"]).loc[("flickr", "train"), "phrases/record"] >= 1
    fig = plot_samples(suite, "refcoco", n=4)
    assert isinstance(fig, Figure)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4 and all(ax.get_title() for ax in shown)
