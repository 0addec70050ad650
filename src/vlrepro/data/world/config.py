"""Settings of the embedded world (``data.world`` in params.yaml); the defaults are the default profile.

Impossible settings fail here, before any image is drawn, with the offending key in the message. The one
check that cannot be made up front (random placement failing for a crowded canvas) fails at generation time
with a :class:`~vlrepro.config.ConfigError` naming the same keys.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from vlrepro.config import Section
from vlrepro.data.world import vocab

Count = Annotated[int, Field(gt=0, description="number of images")]
Probability = Annotated[float, Field(ge=0, le=1)]

# Random sequential placement jams at about 55% of the canvas for squares; above that, placement would
# spin. The visible share of each object must fit in this fraction of the canvas.
PACKING_LIMIT = 0.55


def _choices(value: tuple[str, ...], allowed: tuple[str, ...] | list[str], what: str) -> tuple[str, ...]:
    if not value:
        raise ValueError(f"must list at least one {what}; allowed: {', '.join(allowed)}")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; allowed: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ValueError(f"lists a {what} twice: {list(value)}")
    return value


class SceneConfig(Section):
    min_objects: int = Field(3, ge=1, description="objects per image, at least")
    max_objects: int = Field(6, ge=1, description="objects per image, at most")
    colours: tuple[str, ...] = tuple(vocab.COLOURS)
    sizes: tuple[str, ...] = tuple(vocab.SIZES)
    patterns: tuple[str, ...] = tuple(vocab.PATTERNS)
    object_scale: float = Field(1.0, gt=0, le=2, description="multiplies every object size")
    max_occlusion: float = Field(0.3, ge=0, lt=1, description="largest hidden share of any object")
    clutter_prob: Probability = Field(0.5, description="share of textured (cluttered) backgrounds")
    duplicate_prob: Probability = Field(0.5, description="chance an object copies an earlier one's category")

    @field_validator("colours")
    @classmethod
    def _colours(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(v, tuple(vocab.COLOURS), "colour")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(v, tuple(vocab.SIZES), "size")

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _choices(v, tuple(vocab.PATTERNS), "pattern")

    @model_validator(mode="after")
    def _fits(self) -> SceneConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects = {self.min_objects} > max_objects = {self.max_objects}")
        need = self.max_objects * (1 - self.max_occlusion) * self.smallest_side() ** 2
        if need > PACKING_LIMIT:
            raise ValueError(
                f"max_objects = {self.max_objects} objects of at least {self.smallest_side():.2f} of the image side "
                f"need {need:.0%} of the canvas even at max_occlusion = {self.max_occlusion}; at most "
                f"{PACKING_LIMIT:.0%} can be filled: lower max_objects or object_scale, or raise max_occlusion"
            )
        return self

    def smallest_side(self) -> float:
        return min(vocab.SIZES[s][0] for s in self.sizes) * self.object_scale


class LanguageConfig(Section):
    expressions_per_image: int = Field(3, ge=1, description="referring expressions per image, on distinct targets")
    min_targets_per_image: int = Field(2, ge=1, description="fewer describable targets: the scene is redrawn")
    location_margin: float = Field(vocab.LOCATION_MARGIN, ge=0, lt=0.5, description="fraction of image side")
    near_distance: float = Field(vocab.NEAR_DISTANCE, gt=0, le=1.5, description="fraction of image side")

    @model_validator(mode="after")
    def _order(self) -> LanguageConfig:
        if self.min_targets_per_image > self.expressions_per_image:
            raise ValueError(
                f"min_targets_per_image = {self.min_targets_per_image} > "
                f"expressions_per_image = {self.expressions_per_image}"
            )
        if self.near_distance <= self.location_margin:
            raise ValueError(
                f"near_distance = {self.near_distance} must exceed location_margin = "
                f"{self.location_margin}, or nothing is ever 'next to' anything"
            )
        return self


class ReferringSplits(Section):
    """Images per split of refcoco, refcoco+ and refcocog (each image carries several expressions)."""

    train: Count = 7000  # SMCIM's fusion overfits 2,000 images per set
    val: Count = 200
    testA: Count = 200  # noqa: N815 - the split names of RefCOCO
    testB: Count = 200  # noqa: N815


class FlickrConfig(Section):
    train: Count = 1500
    val: Count = 200
    test: Count = 200
    captions_per_image: int = Field(2, ge=1)


class VGConfig(Section):
    train: Count = 1500
    val: Count = 200
    regions_per_image: int = Field(4, ge=1)


class DetConfig(Section):
    train: Count = 1500
    test: Count = 300
    novel_categories: tuple[str, ...] = ("heart", "crescent", "star", "cross")

    @field_validator("novel_categories")
    @classmethod
    def _novel(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _choices(v, vocab.CATEGORY_NAMES, "category")
        if len(v) == len(vocab.CATEGORY_NAMES):
            raise ValueError("every category is novel; leave at least one base category to train on")
        return v


class OdinwConfig(Section):
    shots: int = Field(10, ge=1, description="train images per category (k-shot); record.meta['shot'] < k subsets")
    test: Count = 200


class CaptionsConfig(Section):
    train: Count = 12000  # CLIP's pairs: with 1,500 images its retrieval stalls near R@1 0.2
    val: Count = 200
    test: Count = 200
    per_image: int = Field(5, ge=1, description="captions per image, as COCO's 5")


class WebConfig(Section):
    train: Count = 2000
    noise_rate: Probability = Field(0.3, description="share of web captions that do not describe their image")


class CubConfig(Section):
    train: Count = 1200
    val: Count = 200
    test: Count = 600
    species: int = Field(16, ge=2, description="classes; each is a (round category, colour, pattern) combination")
    target_size: float = Field(0.4, gt=0, le=0.9, description="side of the target, fraction of the image side")
    min_distractors: int = Field(1, ge=0)
    max_distractors: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _order(self) -> CubConfig:
        if self.min_distractors > self.max_distractors:
            raise ValueError(f"min_distractors = {self.min_distractors} > max_distractors = {self.max_distractors}")
        return self


class WorldConfig(Section):
    """The embedded benchmark: one seeded generator, one suite of sets (see ``suite.SETS``)."""

    seed: int = Field(0, ge=0)
    image_size: int = Field(64, ge=24, le=1024, description="side of the square images, pixels")
    scene: SceneConfig = SceneConfig()
    language: LanguageConfig = LanguageConfig()
    referring: ReferringSplits = ReferringSplits()
    flickr: FlickrConfig = FlickrConfig()
    vg: VGConfig = VGConfig()
    det: DetConfig = DetConfig()
    odinw: OdinwConfig = OdinwConfig()
    captions: CaptionsConfig = CaptionsConfig()
    web: WebConfig = WebConfig()
    cub: CubConfig = CubConfig()

    @model_validator(mode="after")
    def _consistent(self) -> WorldConfig:
        if self.language.min_targets_per_image > self.scene.min_objects:
            raise ValueError(
                f"language.min_targets_per_image = {self.language.min_targets_per_image} > "
                f"scene.min_objects = {self.scene.min_objects}: a scene could never qualify"
            )
        round_categories = sum(c.super_category == vocab.SUPER_CATEGORIES[0] for c in vocab.CATEGORIES)
        combos = round_categories * len(self.scene.colours) * len(self.scene.patterns)
        if self.cub.species > combos:
            raise ValueError(
                f"cub.species = {self.cub.species} > {combos} distinct (category, colour, pattern) "
                "combinations of scene.colours and scene.patterns"
            )
        cub_need = (1 - self.scene.max_occlusion) * (
            self.cub.target_size**2 + self.cub.max_distractors * self.scene.smallest_side() ** 2
        )
        if cub_need > PACKING_LIMIT:
            raise ValueError(
                f"cub.max_distractors = {self.cub.max_distractors} with cub.target_size = "
                f"{self.cub.target_size} need {cub_need:.0%} of the canvas; at most {PACKING_LIMIT:.0%}"
            )
        return self
