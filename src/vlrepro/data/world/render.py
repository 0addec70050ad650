"""Drawing: shape masks, pattern fills and backgrounds.

Everything here is a pure function of its arguments (randomness only through the ``rng`` passed in), so a
scene renders to the same bytes every time.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage.draw import polygon2mask
from skimage.transform import resize

from vlrepro.data.world import vocab

# Height of each shape's box relative to its side (the side is the box width).
ASPECT: dict[str, float] = {name: 1.0 for name in vocab.CATEGORY_NAMES} | {
    "oval": 0.62,
    "semicircle": 0.55,
    "arrow": 0.8,
}


def _polygon(h: int, w: int, points: list[tuple[float, float]]) -> np.ndarray:
    """Mask of a polygon given by (u, v) vertices in the [-1, 1] box frame."""
    rc = np.array([((v + 1) / 2 * h, (u + 1) / 2 * w) for u, v in points])
    return polygon2mask((h, w), rc)


@lru_cache(maxsize=4096)
def shape_mask(category: str, side: int) -> np.ndarray:
    """Boolean mask ``(h, w)`` of a shape whose box is ``side`` pixels wide (cached, read-only)."""
    w = side
    h = max(2, round(side * ASPECT[category]))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1  # pixel centres in [-1, 1], v grows downwards
    r2 = u**2 + v**2
    if category in ("circle", "oval"):
        m = r2 <= 1
    elif category == "ring":
        m = (r2 <= 1) & (r2 >= 0.55**2)
    elif category == "heart":
        x, y = 1.15 * u, -1.15 * v + 0.15
        m = (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    elif category == "crescent":
        m = (r2 <= 1) & ((u - 0.45) ** 2 + (v + 0.1) ** 2 > 0.8**2)
    elif category == "semicircle":
        t = (1 - v) / 2  # 0 at the flat bottom edge, 1 at the top
        m = u**2 + t**2 <= 1
    elif category == "square":
        m = np.ones((h, w), bool)
    elif category == "triangle":
        m = np.abs(u) <= (v + 1) / 2
    elif category == "diamond":
        m = np.abs(u) + np.abs(v) <= 1
    elif category == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        m = _polygon(h, w, [(r * np.cos(a), r * np.sin(a) + 0.1) for r, a in zip(radii, angles, strict=True)])
    elif category == "arrow":  # pointing right: a shaft and a triangular head
        m = ((u <= 0.1) & (np.abs(v) <= 0.35)) | ((u >= 0.0) & (np.abs(v) <= 1 - u))
    elif category == "cross":
        m = (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    else:
        raise KeyError(f"no drawing for category {category!r}")
    m.setflags(write=False)
    return m


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch the outside (4-neighbourhood)."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _pattern(pattern: str, h: int, w: int, unit: int) -> np.ndarray:
    """Pixels that take the pattern's second colour, in the object's own frame."""
    y, x = np.mgrid[0:h, 0:w]
    if pattern == "plain":
        return np.zeros((h, w), bool)
    if pattern == "striped":  # diagonal stripes
        return ((x + y) // unit) % 2 == 1
    if pattern == "dotted":  # small light squares on a grid
        period = 2 * unit + 1
        return (x % period < unit) & (y % period < unit)
    if pattern == "checkered":
        cell = unit + 1
        return ((x // cell) + (y // cell)) % 2 == 1
    raise KeyError(f"no drawing for pattern {pattern!r}")


def palette(colour: str, shifted: bool) -> np.ndarray:
    rgb = vocab.COLOURS[colour][0]
    return np.array(vocab.shifted_rgb(rgb) if shifted else rgb, dtype=np.float64)


def object_fill(category: str, side: int, colour: str, pattern: str, image_size: int, shifted: bool) -> np.ndarray:
    """RGB uint8 ``(h, w, 3)`` appearance of one object (only pixels inside ``shape_mask`` are used)."""
    mask = shape_mask(category, side)
    h, w = mask.shape
    base = palette(colour, shifted)
    # Dots are light, stripes and checks dark, so the base colour still dominates what one sees.
    second = 0.45 * base + 0.55 * 255 if pattern == "dotted" else 0.45 * base
    unit = max(1, image_size // 32)
    fill = np.empty((h, w, 3))
    fill[:] = base
    fill[_pattern(pattern, h, w, unit)] = second
    fill[_outline(mask)] = 0.5 * base  # keeps overlapping objects of one colour apart
    return fill.round().astype(np.uint8)


@lru_cache(maxsize=64)
def _texture(source: str, tint: tuple[float, float, float] | None, min_side: int) -> np.ndarray:
    """A scikit-image sample image as float RGB, downscaled so its short side is ``min_side``."""
    img = np.asarray(getattr(skdata, source)(), dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None] * np.array(tint or (1.0, 1.0, 1.0))
    img = img[..., :3]
    scale = min_side / min(img.shape[:2])
    shape = (max(min_side, round(img.shape[0] * scale)), max(min_side, round(img.shape[1] * scale)), 3)
    out = resize(img, shape, anti_aliasing=True, preserve_range=True)
    out.setflags(write=False)
    return out


def background(
    rng: np.random.Generator, image_size: int, clutter_prob: float, shifted: bool
) -> tuple[np.ndarray, dict]:
    """A plain or textured background and its description ``{"kind", "name"}``.

    Textures are random crops of a sample image downscaled to twice the canvas, with their contrast halved
    so that objects stay the most salient thing in the image.
    """
    textures = vocab.SHIFTED_TEXTURES if shifted else vocab.TEXTURES
    if shifted or rng.random() < clutter_prob:
        name = str(rng.choice(list(textures)))
        source, tint, _ = textures[name]
        tex = _texture(source, tint, 2 * image_size)
        y0 = int(rng.integers(0, tex.shape[0] - image_size + 1))
        x0 = int(rng.integers(0, tex.shape[1] - image_size + 1))
        crop = tex[y0 : y0 + image_size, x0 : x0 + image_size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        img = 0.55 * crop + 0.45 * crop.mean(axis=(0, 1))
        return img.round().clip(0, 255).astype(np.uint8), {"kind": "texture", "name": name}
    name = str(rng.choice(list(vocab.PLAIN_BACKGROUNDS)))
    img = np.empty((image_size, image_size, 3), np.uint8)
    img[:] = vocab.PLAIN_BACKGROUNDS[name]
    return img, {"kind": "plain", "name": name}


def background_words(bg: dict) -> str:
    """How a caption names a background, e.g. 'a brick wall' or 'a plain grey background'."""
    if bg["kind"] == "plain":
        return f"a plain {bg['name']} background"
    table = vocab.SHIFTED_TEXTURES if bg["name"] in vocab.SHIFTED_TEXTURES else vocab.TEXTURES
    return table[bg["name"]][2]
