"""Scene sampling: which objects an image holds, where they go, and the resulting scene graph.

Objects are placed one after another at random positions, each fully inside the canvas; a position is
rejected when it would hide more than ``scene.max_occlusion`` of any earlier object. Both the positions per
object and the fresh draws per scene are bounded, so a crowded configuration ends in a ``ConfigError``
instead of a silent loop or fewer objects than asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vlrepro.config import ConfigError
from vlrepro.data.world import render, vocab
from vlrepro.data.world.config import WorldConfig

SIZE_JITTER = 0.08  # +-8% keeps the three size classes apart (0.16/0.22/0.30)
PLACEMENT_TRIES = 60  # random positions tried per object before the whole layout is redrawn
SCENE_TRIES = 40  # fresh layouts (and object draws) before giving up with an error


@dataclass(frozen=True)
class ObjectSpec:
    category: str
    colour: str
    size: str
    pattern: str
    side: int  # width of the shape's box in pixels


@dataclass(frozen=True)
class SceneRequest:
    """What a set needs from a scene, beyond the global ``scene`` settings."""

    n_min: int
    n_max: int
    categories: tuple[str, ...] = vocab.CATEGORY_NAMES
    focus_super: str | None = None  # at least ``focus_count`` objects of this super-category
    focus_count: int = 0
    required_category: str | None = None  # at least one object of this category
    fixed: tuple[ObjectSpec, ...] = ()  # objects added as given (the CUB target)
    shifted: bool = False  # the ODinW domain: other textures, other palette
    param: str = "scene.max_objects"  # the key an unplaceable scene is blamed on


@dataclass
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    instances: np.ndarray  # uint8 (H, W); k + 1 where object k is visible
    objects: list[dict]  # the scene graph, in drawing order (index = mask id = depth, 0 at the back)
    background: dict
    fixed_ids: list[int] = field(default_factory=list)  # where each ``SceneRequest.fixed`` object ended up


def object_side(rng: np.random.Generator, cfg: WorldConfig, size: str, fraction: float | None = None) -> int:
    base = vocab.SIZES[size][0] * cfg.scene.object_scale if fraction is None else fraction
    return max(3, round(base * cfg.image_size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)))


def sample_specs(rng: np.random.Generator, cfg: WorldConfig, req: SceneRequest) -> list[ObjectSpec]:
    """Draw the objects' attributes (not their positions).

    With probability ``scene.duplicate_prob`` an object repeats an earlier one's category (and often its
    colour), so that scenes hold look-alikes which only further attributes or locations tell apart, as
    RefCOCO's images hold several people.
    """
    sc = cfg.scene
    n = int(rng.integers(req.n_min, req.n_max + 1))
    forced: list[str] = [req.required_category] if req.required_category else []
    if req.focus_super:
        pool = [c for c in req.categories if vocab.CATEGORY_BY_NAME[c].super_category == req.focus_super]
        forced += [str(rng.choice(pool)) for _ in range(req.focus_count)]
    specs: list[ObjectSpec] = []
    for j in range(n):
        colour, pattern = str(rng.choice(sc.colours)), str(rng.choice(sc.patterns))
        if j < len(forced):
            category = forced[j]
        elif specs and rng.random() < sc.duplicate_prob:
            src = specs[int(rng.integers(len(specs)))]
            category = src.category
            colour = src.colour if rng.random() < 0.5 else colour
            pattern = src.pattern if rng.random() < 0.3 else pattern
        else:
            category = str(rng.choice(req.categories))
        size = str(rng.choice(sc.sizes))
        specs.append(ObjectSpec(category, colour, size, pattern, object_side(rng, cfg, size)))
    return specs


def _place(
    rng: np.random.Generator, masks: list[np.ndarray], size: int, max_occlusion: float
) -> tuple[list[tuple[int, int]], np.ndarray] | None:
    """Top-left corners for each mask in turn plus the instance map, or None when a mask finds no spot."""
    owner = np.zeros((size, size), np.int32)  # k + 1 of the visible object, as drawn so far
    visible: list[int] = []
    keep: list[int] = []  # pixels each object must keep visible
    corners: list[tuple[int, int]] = []
    for k, m in enumerate(masks):
        h, w = m.shape
        for _ in range(PLACEMENT_TRIES):
            y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            window = owner[y0 : y0 + h, x0 : x0 + w]
            hidden = np.bincount(window[m], minlength=k + 1)[1:]
            left = np.asarray(visible, dtype=np.int64) - hidden
            if np.all(left >= np.asarray(keep, dtype=np.int64)):
                window[m] = k + 1
                visible = [*left.tolist(), int(m.sum())]
                keep.append(math.ceil((1 - max_occlusion) * m.sum()))
                corners.append((y0, x0))
                break
        else:
            return None
    return corners, owner.astype(np.uint8)


def sample_scene(rng: np.random.Generator, cfg: WorldConfig, req: SceneRequest) -> Scene:
    """Draw objects, place them, render the image, instance map and scene graph."""
    size = cfg.image_size
    for _ in range(SCENE_TRIES):
        specs = sample_specs(rng, cfg, req) + list(req.fixed)
        order = rng.permutation(len(specs))  # depth order; the fixed objects land at a random depth
        specs = [specs[i] for i in order]
        masks = [render.shape_mask(s.category, s.side) for s in specs]
        if any(max(m.shape) > size for m in masks):
            raise ConfigError(
                f"data.world.{req.param}: an object of {max(max(m.shape) for m in masks)} px does "
                f"not fit a {size} px image; lower the object size"
            )
        placed = _place(rng, masks, size, cfg.scene.max_occlusion)
        if placed is not None:
            break
    else:
        raise ConfigError(
            f"data.world.{req.param}: could not place the objects in a {size} px image without hiding more than "
            f"scene.max_occlusion = {cfg.scene.max_occlusion} of one, after {SCENE_TRIES} layouts of "
            f"{PLACEMENT_TRIES} tries per object; lower {req.param} or the object sizes, or allow more occlusion"
        )
    corners, instances = placed
    image, bg = render.background(rng, size, cfg.scene.clutter_prob, req.shifted)
    for spec, m, (y0, x0) in zip(specs, masks, corners, strict=True):
        h, w = m.shape
        fill = render.object_fill(spec.category, spec.side, spec.colour, spec.pattern, size, req.shifted)
        image[y0 : y0 + h, x0 : x0 + w][m] = fill[m]
    objects = []
    for k, (spec, m, (y0, x0)) in enumerate(zip(specs, masks, corners, strict=True)):
        h, w = m.shape
        mine = instances[y0 : y0 + h, x0 : x0 + w] == k + 1
        rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
        box = [x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1]
        cat = vocab.CATEGORY_BY_NAME[spec.category]
        objects.append(
            {
                "category": spec.category,
                "category_id": vocab.CATEGORY_NAMES.index(spec.category),
                "super_category": cat.super_category,
                "colour": spec.colour,
                "size": spec.size,
                "pattern": spec.pattern,
                "box": box,
                "mask_id": k,
                "depth": k,
            }
        )
    fixed_ids = [int(np.flatnonzero(order == len(specs) - len(req.fixed) + i)[0]) for i in range(len(req.fixed))]
    return Scene(image, instances, objects, bg, fixed_ids)
