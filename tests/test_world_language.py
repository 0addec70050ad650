"""Texts of the world, read back with the resolver: unique referring expressions, true phrases, known noise."""

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlrepro.data.records import Split
from vlrepro.data.world import vocab
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.language import NOISE_TYPES, STYLES
from vlrepro.data.world.resolver import parse, resolve, tokenize
from vlrepro.data.world.suite import build_split


def config(seed: int = 0, images: int = 40, **sections) -> WorldConfig:
    return WorldConfig.model_validate({
        "seed": seed,
        "referring": {"train": images, "val": images, "testA": images, "testB": images},
        "flickr": {"train": images, "val": 2, "test": 2},
        "vg": {"train": images, "val": 2},
        "web": {"train": images},
        **sections,
    })  # fmt: skip


@cache
def split(set_name: str, name: str = "train", images: int = 40) -> Split:
    return build_split(config(images=images), set_name, name)


def resolve_record(data: Split, text: str, image: int) -> list[int]:
    lang = data.meta["language"]
    return resolve(text, data.meta["scenes"][image], data.meta["image_size"], lang["location_margin"],
                   lang["near_distance"])  # fmt: skip


@pytest.mark.parametrize("style", STYLES)
@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), part=st.sampled_from(["val", "testA", "testB"]))
def test_every_referring_expression_denotes_its_target_alone(style, seed, part):
    data = build_split(config(seed, images=2), style, part)
    targets_per_image: dict[int, list[int]] = {}
    for r in data.records:
        target = r.meta["target"]
        assert resolve_record(data, r.text, r.image) == [target], r.text
        assert list(r.boxes[0]) == data.meta["scenes"][r.image][target]["box"]
        targets_per_image.setdefault(r.image, []).append(target)
    for image, targets in targets_per_image.items():
        assert len(targets) == len(set(targets)) >= 2, f"image {image}: targets {targets}"


def words_of_kind(text: str, kind: str) -> list[str]:
    return [w for w in tokenize(text) if vocab.WORDS.get(w, ("",))[0] == kind]


def test_refcoco_plus_has_no_location_words_while_refcoco_has_many():
    plus, short = split("refcoco+"), split("refcoco")
    assert all(not words_of_kind(r.text, "location") and parse(r.text).relation is None for r in plus.records)
    with_location = np.mean([bool(words_of_kind(r.text, "location")) for r in short.records])
    assert with_location > 0.3


def test_refcocog_is_longer_and_relational():
    long, short = split("refcocog"), split("refcoco")
    assert all(parse(r.text).relation is not None for r in long.records)
    words = {name: np.mean([len(r.text.split()) for r in d.records]) for name, d in [("g", long), ("c", short)]}
    assert words["g"] > 2 * words["c"]


def test_text_blind_guessing_stays_well_under_half():
    """The best single box per image (chosen knowing every target) hits few expressions: targets vary."""
    data = split("refcoco")
    hits = 0
    for image in {r.image for r in data.records}:
        records = [r for r in data.records if r.image == image]
        targets = [r.meta["target"] for r in records]
        hits += max(targets.count(t) for t in targets)  # distinct objects' boxes barely overlap
    assert hits / len(data.records) < 0.45


def test_flickr_phrases_link_to_exactly_the_objects_they_denote():
    data = split("flickr")
    multi = 0
    for r in data.records:
        assert r.phrases
        for i, p in enumerate(r.phrases):
            text = r.phrase_text(i)
            assert text == text.strip() and text in r.text
            linked = sorted(r.mask_ids[b] for b in p.box_ids)
            assert resolve_record(data, text, r.image) == linked, text
            count = words_of_kind(text, "number")
            assert (vocab.WORDS[count[0]][1] == str(len(linked))) if count else len(linked) == 1
            multi += len(linked) > 1
    assert multi >= 5


def test_vg_regions_are_true_of_their_box():
    data = split("vg")
    assert all(r.mask_ids[0] in resolve_record(data, r.text, r.image) for r in data.records)


def test_web_noise_rate_is_close_to_the_configured_one():
    data = build_split(config(images=800), "web", "train")
    noisy = [r.meta["noisy"] for r in data.records]
    assert abs(np.mean(noisy) - 0.3) < 0.05
    assert {r.meta["noise"] for r in data.records if r.meta["noisy"]} == set(NOISE_TYPES)
    assert all(r.meta["noise"] is None for r in data.records if not r.meta["noisy"])
    clean = build_split(config(images=30, web={"train": 30, "noise_rate": 0.0}), "web", "train")
    assert not any(r.meta["noisy"] for r in clean.records)


def test_wrong_attribute_and_missing_object_captions_are_false():
    data = build_split(config(images=200), "web", "train")
    checked = 0
    for r in data.records:
        if r.meta["noise"] in ("wrong_attribute", "missing_object"):
            phrases = r.text.split(": ")[-1].replace(" and ", ", ").split(", ")
            phrases = [p.removeprefix("photo of ").removeprefix("stock picture of ") for p in phrases]
            assert any(resolve_record(data, p, r.image) == [] for p in phrases), r.text
            checked += 1
    assert checked > 20


def test_captions_per_image():
    data = build_split(config(captions={"train": 5, "val": 2, "test": 2, "per_image": 5}), "captions", "train")
    assert len(data.records) == 25 and len({r.text for r in data.records}) > 15
