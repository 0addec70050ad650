"""The language side: referring expressions in three styles, grounded captions, region descriptions,
clean and noisy captions.

Every text is assembled from words of ``vocab`` and then *checked by reading it back* with ``resolver``:
a referring expression is kept only when it denotes its target alone, a caption phrase is linked to exactly
the objects it denotes, a noisy web caption is noisy only when some phrase of it denotes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from vlrepro.data.world import vocab
from vlrepro.data.world.render import background_words
from vlrepro.data.world.resolver import resolve

ADJECTIVES = ("size", "pattern", "colour")  # English adjective order: "big striped blue square"
ATTRIBUTE_SETS: tuple[tuple[str, ...], ...] = tuple(c for n in range(4) for c in combinations(ADJECTIVES, n))
STYLES = ("refcoco", "refcoco+", "refcocog")
NOISE_TYPES = ("wrong_attribute", "missing_object", "unrelated")
_JUNK = (
    "img_{n}.jpg",
    "click here to see more photos",
    "free shipping on all orders over {n}",
    "my holiday pictures {n}",
    "best wallpaper download",
    "untitled {n}",
    "screenshot {n}",
    "view from the hotel window",
    "new collection out now",
    "happy birthday grandma",
)

Objects = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Grounding:
    """The resolver settings every generated text must satisfy (fractions of the image side)."""

    image_size: int
    margin: float
    near: float

    def denotes(self, text: str, objects: Objects, margin: float | None = None) -> list[int]:
        return resolve(text, objects, self.image_size, self.margin if margin is None else margin, self.near)

    def unique(self, text: str, objects: Objects, target: int) -> bool:
        """Denotes ``target`` alone, both with the margin and with none (see ``resolver``)."""
        return self.denotes(text, objects) == [target] and self.denotes(text, objects, margin=0.0) == [target]


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return str(words[int(rng.integers(len(words)))])


def attribute_word(rng: np.random.Generator, kind: str, value: str) -> str:
    if kind == "colour":
        return _pick(rng, vocab.COLOURS[value][1])
    if kind == "size":
        return _pick(rng, vocab.SIZES[value][1])
    if kind == "pattern":
        return _pick(rng, vocab.PATTERNS[value])
    if kind == "location":
        return _pick(rng, vocab.LOCATIONS[value])
    raise KeyError(kind)


def noun_phrase(
    rng: np.random.Generator, obj: Mapping[str, Any], attrs: Sequence[str], generic: bool = False, plural: bool = False
) -> str:
    """e.g. 'big striped blue square', 'red ones' (no article, no count)."""
    words = [attribute_word(rng, kind, obj[kind]) for kind in ADJECTIVES if kind in attrs]
    head = _pick(rng, vocab.GENERIC_WORDS if generic else vocab.CATEGORY_BY_NAME[obj["category"]].words)
    if plural:
        head = "ones" if head == "one" else vocab.plural(head)
    return " ".join([*words, head])


def with_article(phrase: str) -> str:
    return f"{vocab.article(phrase)} {phrase}"


def _with_location(rng: np.random.Generator, phrase: str, location: str) -> str:
    if rng.random() < 0.6:
        return f"{attribute_word(rng, 'location', location)} {phrase}"
    preposition = {"left": "on", "right": "on", "middle": "in"}.get(location, "at")
    return f"{phrase} {preposition} the {location}"


def _shortest_first(rng: np.random.Generator) -> list[tuple[tuple[str, ...], bool]]:
    """(attributes, generic head) pairs ordered by word count, ties in random order."""
    combos = [(attrs, generic) for attrs in ATTRIBUTE_SETS for generic in (False, True)]
    ties = rng.random(len(combos))
    return [combos[i] for i in sorted(range(len(combos)), key=lambda i: (len(combos[i][0]) + combos[i][1], ties[i]))]


def _short(
    rng: np.random.Generator, objects: Objects, target: int, ground: Grounding, locations: bool, generic: bool
) -> tuple[str, tuple[str, ...]] | None:
    obj = objects[target]
    locations_first = locations and rng.random() < 0.5
    for attrs, is_generic in _shortest_first(rng):
        if is_generic and not generic:
            continue
        phrase = noun_phrase(rng, obj, attrs, is_generic)
        places: list[str | None] = []
        if locations:
            # A location word must compare look-alikes ("left circle" with two circles, "middle" with three),
            # never be vacuous, so the word keeps a visual meaning.
            alike = len(ground.denotes(phrase, objects))
            places = [str(x) for x in rng.permutation(list(vocab.LOCATIONS)) if alike >= (3 if x == "middle" else 2)]
        for place in [*places, None] if locations_first else [None, *places]:
            if place is None and is_generic and not attrs:
                continue  # a bare "one"
            text = phrase if place is None else _with_location(rng, phrase, place)
            if ground.unique(text, objects, target):
                return text, attrs
    return None


def short_expression(
    rng: np.random.Generator, objects: Objects, target: int, ground: Grounding, locations: bool, generic: bool = True
) -> str | None:
    """The shortest unique description (refcoco with ``locations``, refcoco+ without); None if there is none."""
    found = _short(rng, objects, target, ground, locations, generic)
    return None if found is None else found[0]


def _appearance_expression(rng: np.random.Generator, objects: Objects, target: int, ground: Grounding) -> str | None:
    """refcoco+: appearance words only; now and then one attribute more than needed, as people write."""
    found = _short(rng, objects, target, ground, locations=False, generic=True)
    if found is None or rng.random() > 0.35:
        return None if found is None else found[0]
    text, attrs = found
    unused = [a for a in ADJECTIVES if a not in attrs]
    if not unused:
        return text
    longer = noun_phrase(rng, objects[target], [*attrs, _pick(rng, unused)])
    return longer if ground.unique(longer, objects, target) else text


def relational_expression(rng: np.random.Generator, objects: Objects, target: int, ground: Grounding) -> str | None:
    """refcocog: a fuller description of the target plus a relation to a uniquely described landmark."""
    obj = objects[target]
    preferred = rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])
    ties = rng.random(len(ATTRIBUTE_SETS))
    attr_sets = sorted(range(len(ATTRIBUTE_SETS)), key=lambda i: (abs(len(ATTRIBUTE_SETS[i]) - preferred), ties[i]))
    landmarks = [int(i) for i in rng.permutation(len(objects)) if i != target]
    landmark_text: dict[int, str | None] = {}
    for a in attr_sets:
        for lm in landmarks:
            if lm not in landmark_text:
                landmark_text[lm] = short_expression(rng, objects, lm, ground, locations=False, generic=False)
            if landmark_text[lm] is None:
                continue
            for relation in rng.permutation(list(vocab.RELATIONS)):
                rel = _pick(rng, vocab.RELATIONS[str(relation)])
                phrase = noun_phrase(rng, obj, ATTRIBUTE_SETS[a])
                form = int(rng.integers(3))
                lead = with_article(phrase) if form == 1 else f"the {phrase}"
                text = f"{lead} {'that is ' if form == 2 else ''}{rel} the {landmark_text[lm]}"
                if ground.unique(text, objects, target):
                    return text
    return None


def referring_expression(
    rng: np.random.Generator, objects: Objects, target: int, style: str, ground: Grounding
) -> str | None:
    """A unique expression for ``target`` in ``style``, or None when the style cannot single it out."""
    if style == "refcoco":
        return short_expression(rng, objects, target, ground, locations=True)
    if style == "refcoco+":
        return _appearance_expression(rng, objects, target, ground)
    if style == "refcocog":
        return relational_expression(rng, objects, target, ground)
    raise ValueError(f"unknown referring style {style!r}; known: {', '.join(STYLES)}")


def referring_expressions(
    rng: np.random.Generator, objects: Objects, eligible: Sequence[int], style: str, ground: Grounding, k: int
) -> list[tuple[int, str]]:
    """Up to ``k`` (target, expression) pairs on distinct targets drawn uniformly from ``eligible``."""
    out: list[tuple[int, str]] = []
    for target in rng.permutation(list(eligible)):
        if len(out) == k:
            break
        text = referring_expression(rng, objects, int(target), style, ground)
        if text is not None:
            out.append((int(target), text))
    return out


@dataclass(frozen=True)
class Mention:
    text: str  # "two blue squares", "a striped heart"
    members: tuple[int, ...]  # every object the text denotes
    anchor: int  # the object it was built from
    attrs: tuple[str, ...]


def mentions(rng: np.random.Generator, objects: Objects, ground: Grounding, max_mentions: int) -> list[Mention]:
    """Noun phrases over disjoint groups of objects, each denoting exactly its group.

    Starting from a random object, the phrase names its category plus a random set of attributes; the group
    is whatever the resolver says the plural phrase denotes (so "blue squares" takes every blue square), and
    the count word follows from the group's size.
    """
    covered: set[int] = set()
    out: list[Mention] = []
    for anchor in rng.permutation(len(objects)):
        anchor = int(anchor)
        if len(out) == max_mentions:
            break
        if anchor in covered:
            continue
        for a in rng.permutation(len(ATTRIBUTE_SETS)):
            attrs = ATTRIBUTE_SETS[a]
            members = ground.denotes(noun_phrase(rng, objects[anchor], attrs, plural=True), objects)
            if covered.isdisjoint(members):
                n = len(members)
                phrase = noun_phrase(rng, objects[anchor], attrs, plural=n > 1)
                text = with_article(phrase) if n == 1 else f"{vocab.count_word(n)} {phrase}"
                out.append(Mention(text, tuple(members), anchor, attrs))
                covered.update(members)
                break
    return out


def _join(parts: Sequence[str]) -> list[str]:
    """Pieces of 'a, b and c' with separators as their own items (keeps span offsets easy)."""
    pieces: list[str] = []
    for i, p in enumerate(parts):
        if i:
            pieces.append(" and " if i == len(parts) - 1 else ", ")
        pieces.append(p)
    return pieces


def grounded_caption(
    rng: np.random.Generator, objects: Objects, background: dict, ground: Grounding, max_mentions: int = 3
) -> tuple[str, list[tuple[int, int, tuple[int, ...]]]]:
    """A Flickr30k-Entities-like caption and its phrases as (start, end, objects denoted)."""
    ms = mentions(rng, objects, ground, int(rng.integers(1, max_mentions + 1)))
    listed: list[tuple[str, Mention | None]] = [(p, None) for p in _join([m.text for m in ms])]
    listed[::2] = [(m.text, m) for m in ms]  # _join puts the phrases at even positions
    if rng.random() < 0.5:
        verb = _pick(rng, ("on", "lying on", "in front of"))
        pieces = [*listed, (f" {verb} {background_words(background)}.", None)]
    else:
        pieces = [(f"{background_words(background)} with ", None), *listed, (".", None)]
    text, spans = "", []
    for piece, mention in pieces:
        if mention is not None:
            spans.append((len(text), len(text) + len(piece), mention.members))
        text += piece
    return text, spans


def caption(rng: np.random.Generator, objects: Objects, background: dict, ground: Grounding) -> str:
    """A clean, COCO-like caption: true of the image, mentioning some of its objects."""
    ms = mentions(rng, objects, ground, int(rng.integers(1, 4)))
    listed = "".join(_join([m.text for m in ms]))
    singles = [m for m in ms if len(m.members) == 1]
    form = int(rng.integers(5))
    if form == 4 and len(singles) >= 2:
        a, b = singles[0], singles[1]
        for relation in rng.permutation(list(vocab.RELATIONS)):
            rel = _pick(rng, vocab.RELATIONS[str(relation)])
            if a.anchor in ground.denotes(f"{a.text} {rel} {b.text}", objects):
                return f"{a.text} {rel} {b.text}."
    if form == 1:
        return f"a picture of {listed}."
    if form == 2:
        return f"{background_words(background)} with {listed}."
    if form == 3 and len(objects) > 1:
        return f"there are {vocab.count_word(len(objects))} shapes, among them {listed}."
    return f"{listed} on {background_words(background)}."


def _false_variant(rng: np.random.Generator, m: Mention, objects: Objects, ground: Grounding) -> str | None:
    """The mention with one attribute changed so that it denotes nothing in the scene."""
    obj = dict(objects[m.anchor])
    values = {"colour": list(vocab.COLOURS), "size": list(vocab.SIZES), "pattern": list(vocab.PATTERNS)}
    for kind in rng.permutation(list(ADJECTIVES)):
        kind = str(kind)
        for value in rng.permutation([v for v in values[kind] if v != obj[kind]]):
            fake = {**obj, kind: str(value)}
            attrs = tuple(a for a in ADJECTIVES if a in m.attrs or a == kind)
            n = len(m.members)
            phrase = noun_phrase(rng, fake, attrs, plural=n > 1)
            text = with_article(phrase) if n == 1 else f"{vocab.count_word(n)} {phrase}"
            if not ground.denotes(text, objects):
                return text
    return None


def _absent_object(rng: np.random.Generator, objects: Objects, ground: Grounding) -> str:
    """'a green arrow' where there is no green arrow (always exists: 96 pairs, few objects)."""
    for c in rng.permutation(len(vocab.CATEGORY_NAMES)):
        for colour in rng.permutation(list(vocab.COLOURS)):
            fake = {"category": vocab.CATEGORY_NAMES[c], "colour": str(colour)}
            text = with_article(noun_phrase(rng, fake, ("colour",)))
            if not ground.denotes(text, objects):
                return text
    raise AssertionError("every category and colour is in the scene")


def _unrelated(rng: np.random.Generator, objects: Objects, ground: Grounding) -> str:
    """Junk alt-text, or a list of objects from another scene (at least one of them absent from this one)."""
    if rng.random() < 0.5:
        fakes = [
            {
                "category": _pick(rng, vocab.CATEGORY_NAMES),
                "colour": _pick(rng, list(vocab.COLOURS)),
                "size": _pick(rng, list(vocab.SIZES)),
                "pattern": _pick(rng, list(vocab.PATTERNS)),
            }
            for _ in range(int(rng.integers(1, 4)))
        ]
        texts = [
            with_article(noun_phrase(rng, f, ATTRIBUTE_SETS[int(rng.integers(len(ATTRIBUTE_SETS)))])) for f in fakes
        ]
        if any(not ground.denotes(t, objects) for t in texts):
            return "".join(_join(texts))
    return _pick(rng, _JUNK).format(n=int(rng.integers(10, 9999)))


def web_caption(
    rng: np.random.Generator, objects: Objects, background: dict, ground: Grounding, noise_rate: float
) -> tuple[str, str | None]:
    """An alt-text-like caption; with probability ``noise_rate`` it is wrong about the image.

    Noise types: ``wrong_attribute`` (a mentioned object with a false colour/size/pattern),
    ``missing_object`` (mentions an object that is not there), ``unrelated`` (junk alt-text or the caption of
    another scene). Returns (text, noise type or None).
    """
    ms = mentions(rng, objects, ground, int(rng.integers(1, 4)))
    texts = [m.text for m in ms]
    noise = str(rng.choice(NOISE_TYPES)) if rng.random() < noise_rate else None
    if noise == "wrong_attribute":
        i = int(rng.integers(len(ms)))
        false = _false_variant(rng, ms[i], objects, ground)
        if false is None:
            noise = "missing_object"
        else:
            texts[i] = false
    if noise == "missing_object":
        texts.insert(int(rng.integers(len(texts) + 1)), _absent_object(rng, objects, ground))
    if noise == "unrelated":
        return _unrelated(rng, objects, ground), noise
    prefix = _pick(rng, ("", "", "photo of ", "image: ", "stock picture of "))
    return prefix + "".join(_join(texts)), noise


def region_description(rng: np.random.Generator, objects: Objects, target: int, ground: Grounding) -> str:
    """A Visual-Genome-like region description: true of the target, not necessarily unique."""
    obj = objects[target]
    attrs = ATTRIBUTE_SETS[int(rng.integers(1, len(ATTRIBUTE_SETS)))]
    if len(objects) > 1 and rng.random() < 0.5:
        for lm in rng.permutation(len(objects)):
            if lm == target:
                continue
            for relation in rng.permutation(list(vocab.RELATIONS)):
                rel = _pick(rng, vocab.RELATIONS[str(relation)])
                other = ATTRIBUTE_SETS[int(rng.integers(len(ATTRIBUTE_SETS)))]
                text = f"{noun_phrase(rng, obj, attrs)} {rel} {with_article(noun_phrase(rng, objects[lm], other))}"
                if target in ground.denotes(text, objects):
                    return text
    if rng.random() < 0.3:
        kind = attrs[int(rng.integers(len(attrs)))]
        return f"the {noun_phrase(rng, obj, ())} is {attribute_word(rng, kind, obj[kind])}"
    return with_article(noun_phrase(rng, obj, attrs))
