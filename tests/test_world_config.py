"""Impossible world settings stop with an error that names the parameter, before or during generation."""


import numpy as np
import pytest
from pydantic import ValidationError

from vlrepro.config import ConfigError
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.scene import SceneRequest, sample_scene


def test_defaults_and_a_tiny_overlay_are_valid():
    cfg = WorldConfig()
    assert cfg.image_size == 64 and cfg.scene.min_objects <= cfg.scene.max_objects
    tiny = WorldConfig.model_validate({"referring": {"train": 8, "val": 2, "testA": 2, "testB": 2}})
    assert tiny.referring.train == 8 and tiny.flickr == cfg.flickr


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"image_size": 0}, "image_size"),
        ({"scene": {"max_objects": 50}}, "max_objects = 50"),
        ({"scene": {"min_objects": 5, "max_objects": 4}}, "min_objects = 5 > max_objects = 4"),
        ({"scene": {"colours": []}}, "scene.colours"),
        ({"scene": {"patterns": ["plaid"]}}, "unknown pattern ['plaid']"),
        ({"scene": {"sizes": ["small", "small"]}}, "scene.sizes"),
        ({"referring": {"train": 0}}, "referring.train"),
        ({"web": {"noise_rate": 1.5}}, "web.noise_rate"),
        ({"cub": {"min_distractors": 3, "max_distractors": 1}}, "min_distractors = 3 > max_distractors = 1"),
        ({"cub": {"species": 500}}, "cub.species = 500"),
        ({"cub": {"max_distractors": 40}}, "cub.max_distractors = 40"),
        ({"det": {"novel_categories": ["unicorn"]}}, "unknown category ['unicorn']"),
        ({"language": {"expressions_per_image": 1}}, "min_targets_per_image = 2 > expressions_per_image = 1"),
        ({"scene": {"min_objects": 1}}, "language.min_targets_per_image = 2 > scene.min_objects = 1"),
        ({"scene": {"max_objects": 7}, "sizes": 3}, "sizes"),  # unknown key
    ],
)
def test_impossible_settings_name_the_parameter(overrides, needle):
    with pytest.raises(ValidationError) as e:
        WorldConfig.model_validate(overrides)
    assert needle in str(e.value)


def test_unplaceable_scene_fails_fast_naming_the_parameter():
    # Past the up-front check (which only sees the config), placement itself must give up, not spin.
    with pytest.raises(ConfigError, match=r"data\.world\.scene\.max_objects"):
        sample_scene(np.random.default_rng(0), WorldConfig(), SceneRequest(40, 40))
