"""Read a referring expression (or a caption phrase) back from its text and find what it denotes.

This is the check that every referring expression is unique. It works from the text alone, with the
lexicon tables of ``vocab``, and never sees how the generator built the expression.

Grammar, after lower-casing, splitting into words and dropping stopwords ("the", "on", "that", ...)::

    expression  := noun_phrase [relation noun_phrase]         "red circle to the left of the star"
    noun_phrase := {count | size | pattern | colour | location}  head  {location}
    head        := category word or generic word ("one", "shape", ...), singular or plural

Semantics over the scene graph (a list of objects with category, colour, size, pattern and the ``box`` of
their visible pixels; centre = centre of that box). ``m`` is the margin and ``d`` the near distance, both
fractions of the image side turned into pixels:

- attribute and category words keep the objects with that value; a generic head keeps every object;
- ``relation`` keeps a candidate c when some other object l matching the landmark phrase satisfies
  left_of: cx(l) - cx(c) > m,  right_of: cx(c) - cx(l) > m,  above: cy(l) - cy(c) > m,
  below: cy(c) - cy(l) > m,  near: |centre(c) - centre(l)| < d - m;
- a location word then keeps the candidates within m of the extreme one:
  left: cx <= min cx + m, right: cx >= max cx - m, top: cy <= min cy + m, bottom: cy >= max cy - m,
  middle: distance to the image centre <= smallest such distance + m.

``resolve`` returns every matching object; an expression is unique when it returns one. A larger margin
makes location words more tolerant (more ties) and relations stricter, so an expression that is unique
both at m and at 0 singles out its target with room to spare; that is what the generator demands.

Count words ("three red circles") are parsed into ``NounPhrase.count`` but not checked: ``evaluate``
ignores them and returns every matching object, however many the text says. Counts occur only in caption
phrases, where the generator writes the number of visible matches it has just grounded (true by
construction); the uniqueness check concerns referring expressions, which name one object and carry no
count. A consumer that needs the count (e.g. to test a model's counting) reads it from the parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vlrepro.data.world import vocab

_ATTRIBUTES = ("category", "colour", "size", "pattern")
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")


class ParseError(ValueError):
    """The text is not in the world's grammar (unknown word, no head noun, two colours, ...)."""


@dataclass(frozen=True)
class NounPhrase:
    category: str | None = None
    colour: str | None = None
    size: str | None = None
    pattern: str | None = None
    location: str | None = None
    plural: bool = False
    count: str | None = None


@dataclass(frozen=True)
class Expression:
    target: NounPhrase
    relation: str | None = None
    landmark: NounPhrase | None = None


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def parse_noun_phrase(tokens: Sequence[str], text: str = "") -> NounPhrase:
    phrase = NounPhrase()
    head = False
    for tok in tokens:
        if tok in vocab.STOPWORDS:
            continue
        if tok not in vocab.WORDS:
            raise ParseError(f"unknown word {tok!r} in {text!r}")
        kind, value = vocab.WORDS[tok]
        if kind in ("category", "categories", "generic", "generics"):
            if head:
                raise ParseError(f"two head nouns in {text!r}")
            head = True
            if kind.startswith("categor"):
                phrase = replace(phrase, category=value)
            phrase = replace(phrase, plural=kind.endswith("s"))
            continue
        slot = "count" if kind == "number" else kind
        if getattr(phrase, slot) is not None:
            raise ParseError(f"two {slot} words in {text!r}")
        phrase = replace(phrase, **{slot: value})
    if not head:
        raise ParseError(f"no head noun (a shape or 'one') in {text!r}")
    return phrase


def parse(text: str) -> Expression:
    """Text -> meaning; raises :class:`ParseError` for text outside the grammar."""
    tokens = tokenize(text)
    found = [
        (i, len(words), name)
        for i in range(len(tokens))
        for words, name in vocab.RELATION_PHRASES
        if tuple(tokens[i : i + len(words)]) == words
    ]
    # A shorter phrase inside a longer one ("left of" in "to the left of") is the same relation.
    found = [f for f in found if not any(g[0] < f[0] < g[0] + g[1] for g in found)]
    if not found:
        return Expression(parse_noun_phrase(tokens, text))
    if len(found) > 1:
        raise ParseError(f"more than one relation in {text!r}")
    i, n, relation = found[0]
    return Expression(parse_noun_phrase(tokens[:i], text), relation, parse_noun_phrase(tokens[i + n :], text))


def _centre(obj: Mapping[str, Any]) -> tuple[float, float]:
    x0, y0, x1, y1 = obj["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def _relation_holds(relation: str, candidate: Mapping, landmark: Mapping, m: float, d: float) -> bool:
    (cx, cy), (lx, ly) = _centre(candidate), _centre(landmark)
    if relation == "left_of":
        return lx - cx > m
    if relation == "right_of":
        return cx - lx > m
    if relation == "above":
        return ly - cy > m
    if relation == "below":
        return cy - ly > m
    if relation == "near":
        return ((cx - lx) ** 2 + (cy - ly) ** 2) ** 0.5 < d - m
    raise ParseError(f"unknown relation {relation!r}")


def _at_location(location: str, candidates: list[int], objects: Sequence[Mapping], size: float, m: float) -> list[int]:
    if not candidates:
        return []
    centres = {i: _centre(objects[i]) for i in candidates}
    if location == "left":
        key = {i: centres[i][0] for i in candidates}
    elif location == "right":
        key = {i: -centres[i][0] for i in candidates}
    elif location == "top":
        key = {i: centres[i][1] for i in candidates}
    elif location == "bottom":
        key = {i: -centres[i][1] for i in candidates}
    elif location == "middle":
        key = {i: ((centres[i][0] - size / 2) ** 2 + (centres[i][1] - size / 2) ** 2) ** 0.5 for i in candidates}
    else:
        raise ParseError(f"unknown location {location!r}")
    best = min(key.values())
    return [i for i in candidates if key[i] <= best + m]


def _denotes(phrase: NounPhrase, objects: Sequence[Mapping], extra: list[int] | None = None) -> list[int]:
    """Objects matching the phrase's category and attributes (location is applied by the caller)."""
    return [
        i
        for i, obj in enumerate(objects)
        if all(getattr(phrase, a) is None or getattr(phrase, a) == obj[a] for a in _ATTRIBUTES)
        and (extra is None or i in extra)
    ]


def evaluate(
    expr: Expression,
    objects: Sequence[Mapping[str, Any]],
    image_size: int,
    margin: float = vocab.LOCATION_MARGIN,
    near: float = vocab.NEAR_DISTANCE,
) -> list[int]:
    """Indices of the objects the parsed expression denotes (see the module docstring for the rules)."""
    m, d = margin * image_size, near * image_size

    def noun_phrase(phrase: NounPhrase, allowed: list[int] | None = None) -> list[int]:
        candidates = _denotes(phrase, objects, allowed)
        return _at_location(phrase.location, candidates, objects, image_size, m) if phrase.location else candidates

    if expr.relation is None:
        return noun_phrase(expr.target)
    assert expr.landmark is not None
    landmarks = noun_phrase(expr.landmark)
    related = [
        c
        for c in _denotes(expr.target, objects)
        if any(lm != c and _relation_holds(expr.relation, objects[c], objects[lm], m, d) for lm in landmarks)
    ]
    return noun_phrase(expr.target, related)


def resolve(
    text: str,
    objects: Sequence[Mapping[str, Any]],
    image_size: int,
    margin: float = vocab.LOCATION_MARGIN,
    near: float = vocab.NEAR_DISTANCE,
) -> list[int]:
    """Indices of the scene-graph objects that ``text`` refers to; ``margin``/``near`` are image-side fractions."""
    return evaluate(parse(text), objects, image_size, margin, near)
