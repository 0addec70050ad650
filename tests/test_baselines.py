import numpy as np
import pytest

from vlrepro.baselines import evaluate_image_only, heuristic_baselines, train_image_only
from vlrepro.data.config import BaselineParams
from vlrepro.data.records import Record, Split


def scene_split(n: int, seed: int, size: int = 32) -> Split:
    """Scenes of three squares; the target is always the red one, placed at random — learnable from pixels."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 40, dtype=np.uint8)
    scenes, records = [], []
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
    slots = [(2, 2), (18, 2), (2, 18), (18, 18)]
    for i in range(n):
        objs = []
        for c, slot in zip(colours, rng.permutation(4)[:3], strict=False):
            x, y = slots[slot]
            images[i, y : y + 12, x : x + 12] = c
            objs.append({"box": [x, y, x + 12, y + 12]})
        scenes.append(objs)
        records.append(Record(f"s{i}", i, size, size, "the red one", (tuple(map(float, objs[0]["box"])),),
                              meta={"target": 0}))
    return Split(records, images, meta={"scenes": scenes})


def test_heuristic_baselines_hand_computed():
    images = np.zeros((1, 40, 40, 3), dtype=np.uint8)
    scene = [{"box": [0, 0, 10, 10]}, {"box": [15, 15, 25, 25]}, {"box": [0, 20, 20, 40]}]
    # target = the small central one: centre picks it, largest does not, random hits it 1 time in 3
    split = Split([Record("a", 0, 40, 40, "x", ((15.0, 15.0, 25.0, 25.0),), meta={"target": 1})], images,
                  meta={"scenes": [scene]})
    assert heuristic_baselines(split) == pytest.approx({"random": 1 / 3, "largest": 0.0, "centre": 1.0})


def test_image_only_ranker_learns_a_visual_prior(tmp_path):
    params = BaselineParams(image_only_steps=60, image_only_batch_size=16, image_only_lr=3e-3)
    model = train_image_only(scene_split(96, 0), params, seed=0, out_dir=tmp_path)
    assert evaluate_image_only(model, scene_split(48, 1)) > 0.9  # chance is 1/3
