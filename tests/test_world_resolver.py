"""The resolver on hand-built scenes: location words, relations, margins, plurals, synonyms, bad text."""

import pytest

from vlrepro.data.world import vocab
from vlrepro.data.world.resolver import ParseError, parse, resolve

SIZE = 64


def obj(category: str, colour: str, cx: float, cy: float, size: str = "medium", pattern: str = "plain") -> dict:
    return {"category": category, "colour": colour, "size": size, "pattern": pattern,
            "box": [cx - 5, cy - 5, cx + 5, cy + 5]}  # fmt: skip


# Two red circles (left and right), a blue square between them and lower down.
SCENE = [obj("circle", "red", 10, 20), obj("circle", "red", 50, 22, size="large"), obj("square", "blue", 30, 50)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("left red circle", [0]),
        ("red circle on the right", [1]),
        ("rightmost disc", [1]),  # synonym of circle
        ("crimson circle", [0, 1]),  # ambiguous: both
        ("circle", [0, 1]),
        ("blue one", [2]),
        ("big circle", [1]),
        ("top circle", [0, 1]),  # cy 20 vs 22: within the 6.4 px margin, both tie for "top"
        ("bottom one", [2]),
        ("the red circle to the left of the blue square", [0]),
        ("a circle right of the square", [1]),
        ("circle above the square", [0, 1]),
        ("square below the big circle", [2]),
        ("two red circles", [0, 1]),
        ("green circle", []),
    ],
)
def test_resolves_hand_built_scene(text, expected):
    assert resolve(text, SCENE, SIZE) == expected


def test_margin_makes_close_locations_ambiguous():
    close = [obj("star", "red", 30, 10), obj("star", "red", 34, 50)]  # centres 4 px apart in x
    assert resolve("left star", close, SIZE) == [0, 1]  # within the default margin: no clear left one
    assert resolve("left star", close, SIZE, margin=0.0) == [0]  # strictly leftmost
    assert resolve("star to the left of the bottom star", close, SIZE) == []  # not clear of the landmark
    assert resolve("star to the left of the bottom star", close, SIZE, margin=0.0) == [0]


def test_middle_and_near():
    row = [obj("heart", "pink", x, 32) for x in (8, 32, 56)] + [obj("cross", "green", 40, 40)]
    assert resolve("middle heart", row, SIZE) == [1]
    # near: centre distance < (0.35 - 0.1) * 64 = 16 px; the cross is 11.3 px from heart 1, 17.9 from heart 2
    assert resolve("heart next to the cross", row, SIZE) == [1]
    assert resolve("heart near the cross", row, SIZE, margin=0.0) == [1, 2]


def test_landmark_is_never_the_candidate_itself():
    lonely = [obj("ring", "cyan", 32, 32)]
    assert resolve("ring next to the ring", lonely, SIZE) == []


def test_parse_reads_structure_from_text():
    e = parse("the big striped blue square that is to the left of the yellow star")
    assert (e.target.size, e.target.pattern, e.target.colour, e.target.category) == (
        "large",
        "striped",
        "blue",
        "square",
    )
    assert e.relation == "left_of"
    assert (e.landmark.colour, e.landmark.category) == ("yellow", "star")
    assert parse("two dotted boxes").target.plural and parse("two dotted boxes").target.count == "2"


@pytest.mark.parametrize(
    "text",
    ["purple elephant", "red blue circle", "red", "circle square", "circle left of star above ring", "star near"],
)
def test_text_outside_the_grammar_is_an_error(text):
    with pytest.raises(ParseError):
        resolve(text, SCENE, SIZE)


def test_every_surface_word_has_one_meaning():
    surface = [w for c in vocab.CATEGORIES for w in c.words]
    surface += [w for _, words in vocab.COLOURS.values() for w in words]
    surface += [w for _, words in vocab.SIZES.values() for w in words]
    surface += [w for words in vocab.PATTERNS.values() for w in words]
    surface += [w for words in vocab.LOCATIONS.values() for w in words]
    assert len(surface) == len(set(surface))
    assert all(w in vocab.WORDS for w in surface)
