"""Build every set and split of the embedded benchmark and save them in the shared record format.

Each image gets its own random generator, seeded from (seed, set, split, index), so an image does not
change when another split grows, and the same seed writes the same bytes.

Set by set (``SETS``): what a record is, and which paper uses it.

- ``refcoco`` / ``refcoco+`` / ``refcocog``: one referring expression, one target box (SMCIM; AMC on
  refcoco+). Several records per image, on distinct targets. testA/testB hold only targets of the
  super-category "round"/"angular" (RefCOCO's people/objects).
- ``flickr``: a caption whose phrases link to one or more boxes (AMC pointing game, GLIP grounding).
- ``vg``: region descriptions, one box each (AMC's box-annotated training data).
- ``det``: every object's box and category; train holds base categories only, test all, novel ones flagged
  in the split meta (GLIP zero-shot transfer). ``odinw``: the same task in a shifted domain, k-shot train.
- ``captions``: several clean captions per image; ``web``: one alt-text per image, a known share of them
  wrong (BLIP CapFilt).
- ``cub``: one species-labelled target with its mask among distractors (ALA).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlrepro.config import ConfigError
from vlrepro.data.records import Phrase, Record, Split, save_split
from vlrepro.data.world import language, vocab
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.scene import SCENE_TRIES, ObjectSpec, Scene, SceneRequest, object_side, sample_scene
from vlrepro.data.world.species import make_species
from vlrepro.io import write_json

SETS: dict[str, tuple[str, ...]] = {
    "refcoco": ("train", "val", "testA", "testB"),
    "refcoco+": ("train", "val", "testA", "testB"),
    "refcocog": ("train", "val", "testA", "testB"),
    "flickr": ("train", "val", "test"),
    "vg": ("train", "val"),
    "det": ("train", "test"),
    "odinw": ("train", "test"),
    "captions": ("train", "val", "test"),
    "web": ("train",),
    "cub": ("train", "val", "test"),
}
TEST_SUPER = {"testA": vocab.SUPER_CATEGORIES[0], "testB": vocab.SUPER_CATEGORIES[1]}

Parts = list[dict]  # Record fields other than the image identity, one dict per record
Generator = Callable[[WorldConfig, str, int, np.random.Generator], tuple[Scene, Parts]]


def image_rng(seed: int, set_name: str, split: str, index: int) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, which would break reproducibility.
    key = [seed, zlib.crc32(set_name.encode()), zlib.crc32(split.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def split_size(cfg: WorldConfig, set_name: str, split: str) -> int:
    """Number of images of a split."""
    if set_name not in SETS or split not in SETS[set_name]:
        known = ", ".join(f"{s}/{p}" for s, ps in SETS.items() for p in ps)
        raise KeyError(f"no split {set_name}/{split}; known: {known}")
    if set_name.startswith("refcoco"):
        return getattr(cfg.referring, split)
    if set_name == "odinw" and split == "train":
        return cfg.odinw.shots * len(vocab.CATEGORY_NAMES)
    return getattr(getattr(cfg, set_name), split)


def _grounding(cfg: WorldConfig) -> language.Grounding:
    return language.Grounding(cfg.image_size, cfg.language.location_margin, cfg.language.near_distance)


def _request(cfg: WorldConfig, **kw) -> SceneRequest:
    return SceneRequest(cfg.scene.min_objects, cfg.scene.max_objects, **kw)


def _box(obj: dict) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in obj["box"])  # type: ignore[return-value]


def _objects_parts(objects: list[dict], ids: list[int]) -> dict:
    return {
        "boxes": tuple(_box(objects[i]) for i in ids),
        "labels": tuple(objects[i]["category_id"] for i in ids),
        "mask_ids": tuple(objects[i]["mask_id"] for i in ids),
    }


def _referring(style: str) -> Generator:
    def generate(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
        lang, focus = cfg.language, TEST_SUPER.get(split)
        focus_count = min(cfg.scene.min_objects, max(lang.min_targets_per_image, lang.expressions_per_image))
        req = _request(cfg, focus_super=focus, focus_count=focus_count if focus else 0)
        for _ in range(SCENE_TRIES):
            scene = sample_scene(rng, cfg, req)
            eligible = [i for i, o in enumerate(scene.objects) if focus is None or o["super_category"] == focus]
            pairs = language.referring_expressions(
                rng, scene.objects, eligible, style, _grounding(cfg), lang.expressions_per_image
            )
            if len(pairs) >= lang.min_targets_per_image:
                break
        else:
            raise ConfigError(
                f"data.world.language.min_targets_per_image = {lang.min_targets_per_image}: {SCENE_TRIES} scenes "
                f"in a row had fewer {style} targets that can be described uniquely; allow more scene.colours, "
                "scene.patterns or scene.sizes, or lower it"
            )
        parts = [
            {
                "text": text,
                "phrases": (Phrase(0, len(text), (0,)),),
                "meta": {"target": target, "style": style},
                **_objects_parts(scene.objects, [target]),
            }
            for target, text in pairs
        ]
        return scene, parts

    return generate


def _flickr(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    scene = sample_scene(rng, cfg, _request(cfg))
    parts = []
    for _ in range(cfg.flickr.captions_per_image):
        text, spans = language.grounded_caption(rng, scene.objects, scene.background, _grounding(cfg))
        ids = sorted({i for _, _, members in spans for i in members})
        phrases = tuple(Phrase(s, e, tuple(ids.index(i) for i in members)) for s, e, members in spans)
        parts.append({"text": text, "phrases": phrases, **_objects_parts(scene.objects, ids)})
    return scene, parts


def _vg(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    scene = sample_scene(rng, cfg, _request(cfg))
    targets = rng.permutation(len(scene.objects))[: cfg.vg.regions_per_image]
    parts = []
    for t in targets:
        text = language.region_description(rng, scene.objects, int(t), _grounding(cfg))
        parts.append(
            {"text": text, "phrases": (Phrase(0, len(text), (0,)),), **_objects_parts(scene.objects, [int(t)])}
        )
    return scene, parts


def _detection(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    novel = cfg.det.novel_categories
    # Novel categories are absent from det/train altogether (not merely unlabelled), as in zero-shot transfer.
    allowed = tuple(c for c in vocab.CATEGORY_NAMES if c not in novel) if split == "train" else vocab.CATEGORY_NAMES
    scene = sample_scene(rng, cfg, _request(cfg, categories=allowed))
    return scene, [_objects_parts(scene.objects, list(range(len(scene.objects))))]


def _odinw(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    meta = {}
    required = None
    if split == "train":  # image index = category * shots + shot, so the first k shots form a k-shot subset
        required = vocab.CATEGORY_NAMES[index // cfg.odinw.shots]
        meta = {"shot": index % cfg.odinw.shots, "category": required}
    scene = sample_scene(rng, cfg, _request(cfg, required_category=required, shifted=True))
    return scene, [{**_objects_parts(scene.objects, list(range(len(scene.objects)))), "meta": meta}]


def _captions(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    scene = sample_scene(rng, cfg, _request(cfg))
    texts = [
        language.caption(rng, scene.objects, scene.background, _grounding(cfg)) for _ in range(cfg.captions.per_image)
    ]
    return scene, [{"text": t, "meta": {"caption_index": j}} for j, t in enumerate(texts)]


def _web(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    scene = sample_scene(rng, cfg, _request(cfg))
    text, noise = language.web_caption(rng, scene.objects, scene.background, _grounding(cfg), cfg.web.noise_rate)
    return scene, [{"text": text, "meta": {"noisy": noise is not None, "noise": noise}}]


@lru_cache(maxsize=8)
def species_of(cfg: WorldConfig) -> tuple[dict, ...]:
    """The suite's species list (drawn from the seed alone, so every split agrees)."""
    return tuple(make_species(cfg, image_rng(cfg.seed, "cub", "species", 0)))


def _cub(cfg: WorldConfig, split: str, index: int, rng: np.random.Generator) -> tuple[Scene, Parts]:
    species = species_of(cfg)
    label = int(rng.integers(len(species)))
    sp = species[label]
    side = object_side(rng, cfg, "large", cfg.cub.target_size)
    target = ObjectSpec(sp["category"], sp["colour"], "large", sp["pattern"], side)
    # Distractors come from the other super-category, so the species is always the one round object.
    distractors = tuple(c.name for c in vocab.CATEGORIES if c.super_category == vocab.SUPER_CATEGORIES[1])
    req = SceneRequest(
        cfg.cub.min_distractors, cfg.cub.max_distractors, distractors, fixed=(target,), param="cub.max_distractors"
    )
    scene = sample_scene(rng, cfg, req)
    t = scene.fixed_ids[0]
    return scene, [
        {"text": sp["name"], "meta": {"species": sp["name"]}, **_objects_parts(scene.objects, [t]), "labels": (label,)}
    ]


GENERATORS: dict[str, Generator] = {
    "refcoco": _referring("refcoco"),
    "refcoco+": _referring("refcoco+"),
    "refcocog": _referring("refcocog"),
    "flickr": _flickr,
    "vg": _vg,
    "det": _detection,
    "odinw": _odinw,
    "captions": _captions,
    "web": _web,
    "cub": _cub,
}


def _split_meta(cfg: WorldConfig, set_name: str, split: str) -> dict:
    novel = set(cfg.det.novel_categories)
    meta: dict = {
        "set": set_name,
        "split": split,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "super_categories": list(vocab.SUPER_CATEGORIES),
        "categories": [
            {
                "id": i,
                "name": c.name,
                "super_category": c.super_category,
                "novel": c.name in novel,
                "words": list(c.words),
            }
            for i, c in enumerate(vocab.CATEGORIES)
        ],
        "colours": list(cfg.scene.colours),
        "sizes": list(cfg.scene.sizes),
        "patterns": list(cfg.scene.patterns),
        "language": {"location_margin": cfg.language.location_margin, "near_distance": cfg.language.near_distance},
    }
    if set_name in ("det", "odinw"):
        annotated = [c for c in vocab.CATEGORY_NAMES if not (set_name == "det" and split == "train" and c in novel)]
        meta["prompts"] = annotated
        meta["prompt"] = ". ".join(annotated)
        meta["base_category_ids"] = [i for i, c in enumerate(vocab.CATEGORY_NAMES) if c not in novel]
        meta["novel_category_ids"] = [i for i, c in enumerate(vocab.CATEGORY_NAMES) if c in novel]
    if set_name == "odinw":
        meta["domain"] = {"textures": list(vocab.SHIFTED_TEXTURES), "palette": "shifted (darker, desaturated)"}
        meta["shots"] = cfg.odinw.shots
    if set_name == "web":
        meta["noise_rate"] = cfg.web.noise_rate
        meta["noise_types"] = list(language.NOISE_TYPES)
    if set_name == "cub":
        meta["species"] = list(species_of(cfg))
    return meta


def build_split(cfg: WorldConfig, set_name: str, split: str, bar: tqdm | None = None) -> Split:
    """Generate one split in memory (images, instance maps, records, scene graphs in ``meta``)."""
    n, size = split_size(cfg, set_name, split), cfg.image_size
    images = np.empty((n, size, size, 3), np.uint8)
    instances = np.empty((n, size, size), np.uint8)
    records: list[Record] = []
    scenes, backgrounds = [], []
    generate = GENERATORS[set_name]
    for i in range(n):
        scene, parts = generate(cfg, split, i, image_rng(cfg.seed, set_name, split, i))
        images[i], instances[i] = scene.image, scene.instances
        scenes.append(scene.objects)
        backgrounds.append(scene.background)
        image_id = f"{set_name}/{split}/{i:06d}"
        records += [Record(image_id=image_id, image=i, width=size, height=size, **p) for p in parts]
        if bar is not None:
            bar.update()
    meta = _split_meta(cfg, set_name, split) | {"scenes": scenes, "backgrounds": backgrounds}
    if set_name == "web":
        meta["observed_noise_rate"] = float(np.mean([r.meta["noisy"] for r in records]))
    return Split(records, images, instances, meta)


def build_suite(cfg: WorldConfig, out_dir: Path, progress: bool = True) -> dict:
    """Write every split to ``out_dir/<set>/<split>/`` and ``out_dir/manifest.json``; return the manifest."""
    out_dir = Path(out_dir)
    total = sum(split_size(cfg, s, p) for s, ps in SETS.items() for p in ps)
    manifest: dict = {"seed": cfg.seed, "image_size": cfg.image_size, "sets": {}}
    with tqdm(total=total, desc="world", unit="img", disable=not progress) as bar:
        for set_name, splits in SETS.items():
            for split in splits:
                bar.set_postfix_str(f"{set_name}/{split}")
                data = build_split(cfg, set_name, split, bar)
                save_split(out_dir / set_name / split, data)
                manifest["sets"].setdefault(set_name, {})[split] = {
                    "images": len(data.images),
                    "records": len(data.records),
                }
    manifest["config"] = cfg.model_dump(mode="json")
    write_json(out_dir / "manifest.json", manifest)
    return manifest
