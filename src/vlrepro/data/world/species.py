"""CUB stand-in: fine-grained "species", each a (round category, colour, pattern) combination.

Species come in families: most new species copy an existing one and change a single attribute, so many
pairs differ in one attribute only (as bird species differ by a wing bar or a crown colour), and telling
them apart needs the right part of the right object.
"""

from __future__ import annotations

import numpy as np

from vlrepro.data.world import vocab
from vlrepro.data.world.config import WorldConfig

ATTRIBUTES = ("category", "colour", "pattern")
FAMILY_PROB = 0.75  # chance a new species is a one-attribute variant of an existing one


def make_species(cfg: WorldConfig, rng: np.random.Generator) -> list[dict]:
    """``cfg.cub.species`` distinct species as dicts with id, name, category, colour, pattern."""
    categories = [c.name for c in vocab.CATEGORIES if c.super_category == vocab.SUPER_CATEGORIES[0]]
    remaining = [
        (cat, col, pat) for cat in categories for col in cfg.scene.colours for pat in cfg.scene.patterns
    ]  # config validation guarantees there are enough
    chosen: list[tuple[str, str, str]] = []
    while len(chosen) < cfg.cub.species:
        variants = [r for r in remaining if any(sum(a != b for a, b in zip(r, c, strict=True)) == 1 for c in chosen)]
        pool = variants if variants and rng.random() < FAMILY_PROB else remaining
        pick = pool[int(rng.integers(len(pool)))]
        remaining.remove(pick)
        chosen.append(pick)
    return [
        {"id": i, "name": f"{pat} {col} {cat}", "category": cat, "colour": col, "pattern": pat}
        for i, (cat, col, pat) in enumerate(chosen)
    ]
