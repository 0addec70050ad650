"""Attribute targets from the scene graph, and average precision, on hand-made cases."""

import numpy as np
import pytest
import torch

from vlrepro.pretrain.attributes import IGNORE, AttributeSpace, average_precision, dense_targets, presence_targets
from vlrepro.pretrain.data import SceneImages

META = {
    "categories": [{"name": "circle", "novel": False}, {"name": "star", "novel": True}],
    "colours": ["red", "blue"],
    "patterns": ["plain"],
    "sizes": ["small", "large"],
}


def scene() -> SceneImages:
    """16x16 image: a red small circle fills the top-left 8x8 cell, a blue large star half of the bottom-right one."""
    inst = np.zeros((1, 16, 16), np.uint8)
    inst[0, :8, :8] = 1
    inst[0, 8:, 12:] = 2
    objs = [
        {"category": "circle", "colour": "red", "pattern": "plain", "size": "small", "mask_id": 0, "box": [0, 0, 8, 8]},
        {"category": "star", "colour": "blue", "pattern": "plain", "size": "large", "mask_id": 1,
         "box": [12, 8, 16, 16]},
    ]
    return SceneImages(np.zeros((1, 16, 16, 3), np.uint8), inst, [objs], META)


def test_dense_targets_label_cells_by_the_object_covering_them():
    space = AttributeSpace.from_meta(META, hold_out_novel=True)
    labels, boxes = dense_targets(scene(), space, stride=8)
    assert labels.shape == (1, 4, 2, 2) and boxes.shape == (1, 4, 2, 2)
    # groups: category, colour, pattern, size; values + 1, 0 = background
    assert labels[0, :, 0, 0].tolist() == [1, 1, 1, 1]
    assert labels[0, :, 0, 1].tolist() == [0, 0, 0, 0]
    # the star covers half of its cell (>= 0.4): its attributes, but no category label (a held-out novel class)
    assert labels[0, :, 1, 1].tolist() == [IGNORE, 2, 1, 2]
    assert boxes[0, :, 0, 0].tolist() == pytest.approx([0.25, 0.25, 0.5, 0.5])
    assert boxes[0, :, 1, 1].tolist() == pytest.approx([0.875, 0.75, 0.25, 0.5])
    assert boxes[0, :, 0, 1].tolist() == [0, 0, 0, 0]


def test_presence_and_label_mask():
    space = AttributeSpace.from_meta(META, hold_out_novel=True)
    assert space.labels[:3] == [("category", "circle"), ("category", "star"), ("colour", "red")]
    assert presence_targets(scene(), space)[0].tolist() == [1, 1, 1, 1, 1, 1, 1]
    assert space.label_mask().tolist() == [True, False, True, True, True, True, True]
    assert AttributeSpace.from_meta(META, hold_out_novel=False).label_mask().all()


def test_average_precision_hand_computed():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    ap = average_precision(scores, targets)
    assert ap[0].item() == pytest.approx((1 / 1 + 2 / 3) / 2)  # positives ranked 1st and 3rd
    assert torch.isnan(ap[1])  # no positive: undefined, left out of the mean
