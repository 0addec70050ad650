"""Caption truth against scene graphs: every generated caption is true of its image, wrong ones are not."""

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from vlrepro.data.records import Split, load_split
from vlrepro.data.world.captions import caption_true, caption_truth_matrix, is_world_caption
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import build_split

DATA = Path(__file__).resolve().parents[1] / "data" / "world" / "captions" / "test"
SIZE, MARGIN, NEAR = 64, 0.1, 0.35
GREY = {"kind": "plain", "name": "grey"}
BRICK = {"kind": "texture", "name": "brick"}


@cache
def world(set_name: str, images: int = 40, seed: int = 3) -> Split:
    """A small world built in memory, so the test needs no data/ folder (CI)."""
    cfg = WorldConfig.model_validate({
        "seed": seed,
        "captions": {"train": 2, "val": 2, "test": images, "per_image": 5},
        "flickr": {"train": 2, "val": 2, "test": images},
    })  # fmt: skip
    return build_split(cfg, set_name, "test")


def true_of_own_image(split: Split) -> list[bool]:
    meta = split.meta
    margin, near = meta["language"]["location_margin"], meta["language"]["near_distance"]
    return [
        caption_true(r.text, meta["scenes"][r.image], meta["backgrounds"][r.image], meta["image_size"], margin, near)
        for r in split.records
    ]


def obj(category: str, colour: str, box: tuple[int, int, int, int], size: str = "small", pattern: str = "plain"):
    return {"category": category, "colour": colour, "size": size, "pattern": pattern, "box": list(box)}


# Scene A: two red circles (left, bottom middle) and a big striped blue square on the right; grey background.
SCENE_A = [
    obj("circle", "red", (2, 20, 12, 30)),
    obj("square", "blue", (40, 20, 60, 40), "large", "striped"),
    obj("circle", "red", (20, 44, 34, 58), "medium"),
]
# Scene B shares the blue square with A and nothing else.
SCENE_B = [obj("square", "blue", (4, 4, 24, 24), "large", "striped"), obj("star", "yellow", (40, 40, 50, 50))]


def true_of_a(text: str) -> bool:
    return caption_true(text, SCENE_A, GREY, SIZE, MARGIN, NEAR)


@pytest.mark.parametrize("set_name", ["captions", "flickr"])
def test_every_generated_caption_is_true_of_its_own_image(set_name):
    split = world(set_name)
    assert len(split.records) >= 40 and all(true_of_own_image(split))
    assert all(is_world_caption(r.text) for r in split.records if r.text)


@pytest.mark.skipif(not (DATA / "records.json").is_file(), reason="data/world/captions/test not generated")
def test_every_stored_test_caption_is_true_of_its_own_image():
    assert all(true_of_own_image(load_split(DATA)))


def test_matrix_agrees_with_caption_true_and_holds_on_the_pairs():
    split = world("captions")
    texts, images = [r.text for r in split.records], list(range(len(split.meta["scenes"])))
    truth = caption_truth_matrix(split, texts, images)
    assert truth.shape == (len(images), len(texts)) and truth.dtype == bool
    assert truth[[r.image for r in split.records], np.arange(len(texts))].all()
    assert truth.sum() > len(texts)  # some captions also describe other images: the lenient count differs
    meta, lang = split.meta, split.meta["language"]
    for i in (0, 7, 19):
        expected = [
            caption_true(t, meta["scenes"][i], meta["backgrounds"][i], SIZE, lang["location_margin"], NEAR)
            for t in texts
        ]
        assert truth[i].tolist() == expected


@pytest.mark.parametrize(
    "text",
    [
        "two red circles and a big striped blue square on a plain grey background.",
        "a plain grey background with a blue box and two crimson discs.",
        "a picture of a medium red circle, a tiny circle and a square.",
        "there are three shapes, among them a blue square.",
        "a small circle to the left of a large square.",
        "a big square above a medium circle.",
    ],
)
def test_true_captions_of_a_hand_made_scene(text):
    assert true_of_a(text)


@pytest.mark.parametrize(
    "text",
    [
        "two green circles and a blue square on a plain grey background.",  # wrong colour
        "a picture of a dotted blue square.",  # wrong pattern
        "three red circles on a plain grey background.",  # wrong count
        "a picture of a red circle.",  # there are two: "a" says one
        "two red circles on a plain dark background.",  # wrong background
        "a brick wall with a blue square.",  # wrong background (texture)
        "a picture of a blue square and a yellow star.",  # an object that is not there
        "there are four shapes, among them a blue square.",  # wrong shape count
        "a large square to the left of a small circle.",  # the relation is the other way round
    ],
)
def test_wrong_captions_of_a_hand_made_scene(text):
    assert not true_of_a(text)


def test_a_caption_naming_some_objects_is_true_of_another_image_that_has_them():
    text = "a big striped blue square on a plain grey background."
    assert true_of_a(text)
    assert caption_true(text, SCENE_B, GREY, SIZE, MARGIN, NEAR)
    assert not caption_true(text, SCENE_B, BRICK, SIZE, MARGIN, NEAR)
    assert not caption_true("two red circles on a plain grey background.", SCENE_B, GREY, SIZE, MARGIN, NEAR)


def test_a_relation_must_hold_with_the_margin_not_just_without_it():
    """Centres 4 px apart: left of each other at margin 0, not at the world's margin (6.4 px)."""
    scene = [obj("circle", "red", (10, 10, 20, 20)), obj("square", "blue", (14, 40, 24, 50))]
    text = "a red circle to the left of a blue square."
    assert caption_true(text, scene, GREY, SIZE, 0.0, NEAR)
    assert not caption_true(text, scene, GREY, SIZE, MARGIN, NEAR)


@pytest.mark.parametrize(("n", "word"), [(2, "two"), (9, "nine"), (10, "many"), (12, "many")])
def test_count_words_follow_the_generator(n, word):
    scene = [obj("circle", "red", (i, i, i + 5, i + 5)) for i in range(n)]
    assert caption_true(f"{word} red circles on a plain grey background.", scene, GREY, SIZE, MARGIN, NEAR)
    assert caption_true(f"there are {word} shapes, among them {word} circles.", scene, GREY, SIZE, MARGIN, NEAR)
    wrong = "many" if word != "many" else "nine"
    assert not caption_true(f"{wrong} red circles on a plain grey background.", scene, GREY, SIZE, MARGIN, NEAR)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "img_4711.jpg",
        "click here to see more photos",
        "a red circle",  # a bare phrase: neither a caption form nor a relation
        "a picture of red circles.",  # no count
        "two red circle on a plain grey background.",  # a count with a singular noun
        "a picture of a red circle to the left of a blue square.",  # a relation inside the list
        "a plain purple background with a blue square.",  # no such background
        "a picture of a glittering circle.",  # unknown word
        "there are lots of shapes, among them a blue square.",
    ],
)
def test_text_outside_the_grammar_is_false(text):
    assert not true_of_a(text) and not is_world_caption(text)


def test_matrix_needs_scene_graphs():
    real = Split(records=[], meta={"image_size": 224})
    with pytest.raises(ValueError, match="scenes, backgrounds, .*language"):
        caption_truth_matrix(real, ["a picture of a red circle."], [0])
