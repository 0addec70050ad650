"""Whether a world caption is true of a world image, for a lenient caption-retrieval count.

Strict R@1 counts a retrieval as a hit only when the retrieved caption (or image) is the paired one. In the
embedded world many captions are true of many images ("two boxes on a plain grey background"), so a model
that retrieves another image the caption also describes is not wrong. The world's scene graphs say exactly
when that happens, so a lenient R@1 can count such retrievals as hits beside the strict one.

The captions read back here are those of ``language.caption`` (LIST is noun phrases joined by ", " and
" and "; each is "a/an <phrase>" or "<count word> <plural phrase>")::

    <X> <relation> <Y>.                                   true iff the resolver denotes something
    a picture of LIST.
    <background words> with LIST.
    there are <count word> shapes, among them LIST.
    LIST on <background words>.                           ("lying on", "in front of": flickr's captions)

A caption is true when every part holds: the background words are the scene's, the shape count is the
number of objects, and each listed phrase denotes exactly as many objects as its count says (1 for a/an),
which is how ``language.mentions`` chose the count. Only the count *word* is compared, so "many" means
any number past the spelled-out ones, as ``vocab.count_word`` writes it.

Margins: a text is true only if it holds both at the world's location margin and at none (the rule of
``Grounding.unique``), unlike ``amc.data.world_linker``, which accepts either. The linker must not
mistake a true text for a negative, so it leans towards "true"; a lenient *hit* must be earned, so this leans
towards "false" and borderline relations (the circle lies 1 pixel left of the square) do not count. The
generator checked relational captions at the margin, and a relation that holds at the margin holds at none,
so every caption is still true of its own image. List phrases carry no location words, so their truth does
not depend on the margin at all.

Text outside this grammar (unknown words, a bare "red circle", junk alt-text) is simply not true.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from vlrepro.data.records import Split
from vlrepro.data.world import vocab
from vlrepro.data.world.render import background_words
from vlrepro.data.world.resolver import Expression, ParseError, evaluate, parse

Objects = Sequence[Mapping[str, Any]]

_ARTICLES = ("a", "an")
_ONE = "a"  # the count word of a singular phrase, so that one comparison covers both forms
_LIST_SEPARATOR = re.compile(r", | and ")
_SHAPES = re.compile(r"there are ([a-z]+) shapes, among them (.+)")
_VERBS = ("lying on", "in front of", "on")  # longest first: "lying on" also ends in "on"
# Every background any world split can show; longest first so that no name is cut short by a shorter one.
_BACKGROUNDS: tuple[str, ...] = tuple(
    sorted(
        [background_words({"kind": "plain", "name": n}) for n in vocab.PLAIN_BACKGROUNDS]
        + [background_words({"kind": "texture", "name": n}) for n in (*vocab.TEXTURES, *vocab.SHIFTED_TEXTURES)],
        key=len,
        reverse=True,
    )
)


@dataclass(frozen=True)
class _Phrase:
    expr: Expression
    count: str  # _ONE or a canonical count word ("two", "many")
    margin_free: bool  # no location word: one evaluation serves every margin


@dataclass(frozen=True)
class _Caption:
    background: str | None = None
    shapes: str | None = None  # count word of "there are N shapes"
    phrases: tuple[_Phrase, ...] = ()
    relation: Expression | None = None


def _count_word(n: int) -> str | None:
    """What the generator writes for n objects: 'a' for one, 'two'..'nine', then 'many'; None for none."""
    if n == 1:
        return _ONE
    return vocab.count_word(n) if n >= 2 else None


def _number(word: str) -> str | None:
    """'two' -> 'two', 'many' -> 'many', anything else -> None (the parser's values are '2', 'many')."""
    kind, value = vocab.WORDS.get(word, ("", ""))
    if kind != "number":
        return None
    return value if value == vocab.MANY else vocab.NUMBERS[int(value)]


def _phrase(text: str) -> _Phrase:
    words = text.split()
    expr = parse(text)
    np_ = expr.target
    if expr.relation is not None or not words:
        raise ParseError(f"not a listed noun phrase: {text!r}")
    if words[0] in _ARTICLES and not np_.plural and np_.count is None:
        count = _ONE
    elif np_.plural and (number := _number(words[0])) is not None:
        count = number
    else:  # a bare phrase, "a red circles", "two red circle": no count the caption commits to
        raise ParseError(f"no article or count matching the noun in {text!r}")
    return _Phrase(expr, count, np_.location is None)


def _listed(text: str) -> tuple[_Phrase, ...]:
    return tuple(_phrase(p) for p in _LIST_SEPARATOR.split(text))


def _split_background(text: str) -> _Caption | None:
    for bg in _BACKGROUNDS:
        if text.startswith(f"{bg} with "):
            return _Caption(background=bg, phrases=_listed(text.removeprefix(f"{bg} with ")))
        for verb in _VERBS:
            if text.endswith(f" {verb} {bg}"):
                return _Caption(background=bg, phrases=_listed(text.removesuffix(f" {verb} {bg}")))
    return None


@lru_cache(maxsize=1 << 16)
def _parse_caption(text: str) -> _Caption | None:
    """The scene-independent meaning of a caption, or None outside the grammar (cached: texts repeat)."""
    t = text.strip().lower().removesuffix(".")
    try:
        if m := _SHAPES.fullmatch(t):
            shapes = _number(m.group(1))
            return None if shapes is None else _Caption(shapes=shapes, phrases=_listed(m.group(2)))
        if t.startswith("a picture of "):
            return _Caption(phrases=_listed(t.removeprefix("a picture of ")))
        if (found := _split_background(t)) is not None:
            return found
        expr = parse(t)
    except ParseError:
        return None
    # The generator relates two single objects; anything else is no caption of this grammar.
    if expr.relation is None or expr.landmark is None:
        return None
    if any(p.plural or p.count is not None for p in (expr.target, expr.landmark)):
        return None
    return _Caption(relation=expr)


def is_world_caption(text: str) -> bool:
    """Whether ``text`` is a sentence of the world's caption grammar (only those can be judged true or false)."""
    return _parse_caption(text) is not None


def _holds(
    caption: _Caption, objects: Objects, scene_background: str | None, image_size: int, margin: float, near: float
) -> bool:
    if caption.background is not None and caption.background != scene_background:
        return False
    if caption.shapes is not None and caption.shapes != _count_word(len(objects)):
        return False
    margins = (margin, 0.0)
    for p in caption.phrases:
        for m in margins[:1] if p.margin_free else margins:
            if _count_word(len(evaluate(p.expr, objects, image_size, m, near))) != p.count:
                return False
    if caption.relation is not None:
        return all(evaluate(caption.relation, objects, image_size, m, near) for m in margins)
    return True


def caption_true(text: str, objects: Objects, background: dict, image_size: int, margin: float, near: float) -> bool:
    """Whether ``text`` is true of the scene (``objects`` with boxes, ``background`` as ``render.background``
    describes it; ``margin`` and ``near`` as fractions of the image side); False outside the grammar."""
    caption = _parse_caption(text)
    if caption is None:
        return False
    words = background_words(background) if caption.background is not None else None
    return _holds(caption, objects, words, image_size, margin, near)


def caption_truth_matrix(split: Split, texts: list[str], images: list[int]) -> np.ndarray:
    """Bool ``(len(images), len(texts))``: entry [i, j] says whether ``texts[j]`` is true of ``images[i]``,
    with the scene graphs, backgrounds, image size and resolver settings of ``split.meta``."""
    meta = split.meta
    missing = [k for k in ("scenes", "backgrounds", "image_size", "language") if meta.get(k) is None]
    if missing:
        raise ValueError(
            f"caption_truth_matrix: split meta has no {', '.join(missing)}; only embedded-world splits carry "
            "the scene graphs that decide whether a caption is true (real data has none)"
        )
    scenes, backgrounds, size = meta["scenes"], meta["backgrounds"], int(meta["image_size"])
    margin, near = float(meta["language"]["location_margin"]), float(meta["language"]["near_distance"])
    parsed = [(j, c) for j, c in enumerate(map(_parse_caption, texts)) if c is not None]
    out = np.zeros((len(images), len(texts)), dtype=bool)
    for i, image in enumerate(images):
        objects, words = scenes[image], background_words(backgrounds[image])
        for j, c in parsed:
            out[i, j] = _holds(c, objects, words, size, margin, near)
    return out
