"""The lexicon of the embedded world: what exists (categories, colours, sizes, patterns, backgrounds) and
the words for it (canonical name first, then synonyms).

The generator (``language``) and the parser (``resolver``) both read these tables, and nothing else about
each other: the generator picks a surface word for a value, the parser maps every surface word back to its
value. Every surface word therefore has exactly one meaning, which ``_surface_table`` enforces at import.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPER_CATEGORIES: tuple[str, str] = ("round", "angular")  # play RefCOCO's "people" (testA) vs "objects" (testB)


@dataclass(frozen=True)
class Category:
    name: str
    super_category: str
    words: tuple[str, ...]  # singular surface forms, canonical first


CATEGORIES: tuple[Category, ...] = (
    Category("circle", "round", ("circle", "disc")),
    Category("oval", "round", ("oval", "ellipse")),
    Category("ring", "round", ("ring", "donut")),
    Category("heart", "round", ("heart",)),
    Category("crescent", "round", ("crescent", "moon")),
    Category("semicircle", "round", ("semicircle", "dome")),
    Category("square", "angular", ("square", "box")),
    Category("triangle", "angular", ("triangle",)),
    Category("diamond", "angular", ("diamond", "rhombus")),
    Category("star", "angular", ("star",)),
    Category("arrow", "angular", ("arrow", "pointer")),
    Category("cross", "angular", ("cross", "plus")),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}

# name -> (RGB in the main domain, surface words)
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((215, 40, 40), ("red", "crimson")),
    "orange": ((245, 135, 25), ("orange",)),
    "yellow": ((240, 215, 35), ("yellow", "golden")),
    "green": ((40, 165, 60), ("green",)),
    "blue": ((40, 80, 215), ("blue",)),
    "purple": ((145, 55, 185), ("purple", "violet")),
    "pink": ((240, 120, 180), ("pink",)),
    "cyan": ((40, 200, 215), ("cyan", "turquoise")),
}

# name -> (side of the object's bounding square as a fraction of the image side, surface words).
# The three ranges stay disjoint under the +-8% jitter of ``scene.SIZE_JITTER``.
SIZES: dict[str, tuple[float, tuple[str, ...]]] = {
    "small": (0.16, ("small", "little", "tiny")),
    "medium": (0.22, ("medium", "mid-size")),
    "large": (0.30, ("big", "large")),
}

PATTERNS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
    "checkered": ("checkered", "checked"),
}

# A head noun that names no category: "the red one".
GENERIC_WORDS: tuple[str, ...] = ("one", "shape", "thing", "object")

# Absolute location words (refcoco only). Semantics live in ``resolver``.
LOCATIONS: dict[str, tuple[str, ...]] = {
    "left": ("left", "leftmost"),
    "right": ("right", "rightmost"),
    "top": ("top", "upper", "topmost"),
    "bottom": ("bottom", "lower", "bottommost"),
    "middle": ("middle", "center", "central"),
}

# Spatial relations between two objects, as multi-word phrases. Semantics live in ``resolver``.
RELATIONS: dict[str, tuple[str, ...]] = {
    "left_of": ("to the left of", "left of"),
    "right_of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "near": ("next to", "beside", "near"),
}

NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
MANY = "many"  # the count word beyond NUMBERS

# Default semantics of locations and relations, as fractions of the image side (see ``resolver``).
LOCATION_MARGIN = 0.1
NEAR_DISTANCE = 0.35

# Words that carry no meaning for the resolver (articles, copulas, "on the left").
STOPWORDS: frozenset[str] = frozenset({"the", "a", "an", "on", "at", "in", "of", "that", "is", "which", "side"})

# Backgrounds. Textures are scikit-image sample images (bundled, offline); a grey texture gets a tint.
# name -> (skimage.data function, RGB tint or None, words used in captions)
TEXTURES: dict[str, tuple[str, tuple[float, float, float] | None, str]] = {
    "brick": ("brick", (1.0, 0.72, 0.58), "a brick wall"),
    "grass": ("grass", (0.62, 0.92, 0.5), "grass"),
    "gravel": ("gravel", (0.9, 0.86, 0.78), "gravel"),
    "coffee": ("coffee", None, "a photo of coffee"),
    "astronaut": ("astronaut", None, "a photo of an astronaut"),
    "cat": ("chelsea", None, "a photo of a cat"),
}
PLAIN_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (200, 200, 200),
    "beige": (226, 214, 188),
    "dark": (70, 70, 78),
}

# The shifted domain (ODinW stand-in): textures never seen elsewhere and a muted, darker palette.
SHIFTED_TEXTURES: dict[str, tuple[str, tuple[float, float, float] | None, str]] = {
    "moon": ("moon", (0.8, 0.8, 0.95), "the moon"),
    "camera": ("camera", (0.95, 0.9, 0.8), "a photo of a cameraman"),
    "coins": ("coins", (1.0, 0.9, 0.6), "coins"),
    "text": ("text", (0.9, 0.95, 1.0), "printed text"),
    "galaxy": ("hubble_deep_field", None, "a galaxy photo"),
    "tissue": ("immunohistochemistry", None, "a tissue sample"),
}


def shifted_rgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shifted domain's palette: darker and less saturated, so detectors see a colour shift."""
    grey = sum(rgb) / 3
    return tuple(int(round(0.75 * (0.6 * c + 0.4 * grey))) for c in rgb)  # type: ignore[return-value]


def plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x")) else "s")


def count_word(n: int) -> str:
    return NUMBERS.get(n, MANY)


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _surface_table() -> dict[str, tuple[str, str]]:
    """Every word the generator may emit for a value -> (kind, canonical value)."""
    table: dict[str, tuple[str, str]] = {}
    entries: list[tuple[str, str, str]] = []
    for c in CATEGORIES:
        entries += [(w, "category", c.name) for w in c.words]
        entries += [(plural(w), "categories", c.name) for w in c.words]
    entries += [(w, "colour", name) for name, (_, words) in COLOURS.items() for w in words]
    entries += [(w, "size", name) for name, (_, words) in SIZES.items() for w in words]
    entries += [(w, "pattern", name) for name, words in PATTERNS.items() for w in words]
    entries += [(w, "generic", "one") for w in GENERIC_WORDS]
    entries += [(plural(w) if w != "one" else "ones", "generics", "one") for w in GENERIC_WORDS]
    entries += [(w, "location", name) for name, words in LOCATIONS.items() for w in words]
    entries += [(w, "number", str(n)) for n, w in NUMBERS.items()] + [(MANY, "number", MANY)]
    for word, kind, value in entries:
        if word in table or word in STOPWORDS:
            raise AssertionError(f"lexicon word {word!r} has two meanings: {table.get(word)} and {(kind, value)}")
        table[word] = (kind, value)
    return table


WORDS: dict[str, tuple[str, str]] = _surface_table()

# Relation phrases as token tuples, longest first so that "to the left of" wins over "left of".
RELATION_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = tuple(
    sorted(((tuple(p.split()), name) for name, ps in RELATIONS.items() for p in ps), key=lambda t: -len(t[0]))
)
