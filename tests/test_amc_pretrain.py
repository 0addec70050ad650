"""The AMC recipe's pieces: mean-pooled ITC text, random ITM negatives, box-free caption pairs and the ALBEF
checkpoint round trip (the pre-training phase itself runs in the smoke pipeline, tests/test_pipeline.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vlrepro.amc.config import AMCParams, AugmentParams
from vlrepro.amc.data import RegionPairs
from vlrepro.amc.model import ALBEF
from vlrepro.amc.train import _negatives
from vlrepro.data.records import Record, Split
from vlrepro.models import load_pretrained, save_pretrained
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, train_wordpiece

TEXTS = ["a red circle", "two blue squares", "the green star", "a striped heart"]


def _tiny(pooling: str = "mean") -> ALBEF:
    torch.manual_seed(0)
    tok = train_wordpiece(TEXTS, vocab_size=96)
    vision = ViTConfig(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
    text = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32, mlm_head=False)  # fmt: skip
    clip = DualEncoder(CLIPConfig(vision=vision, text=text, embed_dim=8), tok)
    return ALBEF.from_dual_encoder(clip, text_layers=1, vision_trainable_blocks=1, text_pooling=pooling)


def test_text_feature_is_the_cls_or_the_mean_of_the_unpadded_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert _tiny("mean").text_feature(hidden, mask).tolist() == [[2.0, 3.0], [2.0, 3.0]]
    assert _tiny("cls").text_feature(hidden, mask).tolist() == [[1.0, 2.0], [0.0, 1.0]]


def test_random_negatives_are_uniform_over_other_images():
    same = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    torch.manual_seed(0)
    draws = _negatives(torch.zeros(4 * 3000, 4), same.repeat(3000, 1)).view(3000, 4)  # 3000 batches at once
    for row in range(4):
        counts = torch.bincount(draws[:, row], minlength=4).float() / len(draws)
        others = (~same[row]).nonzero().flatten()
        assert counts[same[row]].sum() == 0  # never the query's own image
        assert torch.allclose(counts[others], torch.full((len(others),), 1 / len(others)), atol=0.04)


def test_hard_negatives_follow_the_similarity():
    same = torch.eye(3, dtype=torch.bool)
    sim = torch.tensor([[0.0, 50.0, 0.0], [50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    torch.manual_seed(0)
    assert _negatives(sim, same).tolist() == [1, 0, 1]


def _caption_split(n_images: int = 3) -> Split:
    records = [Record(image_id=str(i), image=i, width=16, height=16, text=TEXTS[i % 4])
               for i in range(n_images) for _ in range(2)]
    return Split(records, np.full((n_images, 16, 16, 3), 128, dtype=np.uint8), None, {})


def test_caption_pairs_have_no_box_and_the_given_image_ids():
    tok = train_wordpiece(TEXTS, vocab_size=96)
    pairs = RegionPairs(_caption_split(), tok, 8, AugmentParams(), 0.15, boxes=False)
    assert len(pairs) == 6 and pairs.image_ids.tolist() == [0, 0, 1, 1, 2, 2]  # the image's index by default
    pairs = RegionPairs(_caption_split(), tok, 8, AugmentParams(), 0.15, boxes=False, image_ids={0: 7, 1: 3, 2: 7})
    batch = pairs.collate([pairs[i] for i in range(6)])
    assert batch["image_ids"].tolist() == [7, 7, 3, 3, 7, 7]
    assert not batch["has_box"].any() and batch["masks"].sum() == 0
    with pytest.raises(ValueError, match="region with a box"):
        RegionPairs(_caption_split(), tok, 8, AugmentParams(), 0.15)  # boxes required by default


def test_albef_checkpoint_round_trip_and_new_phase_settings(tmp_path):
    model = _tiny().eval()
    save_pretrained(model, tmp_path / "albef")
    loaded = load_pretrained(tmp_path / "albef")
    assert isinstance(loaded, ALBEF) and loaded.config == model.config
    images, enc = torch.rand(2, 3, 16, 16), model.text.tokenize(TEXTS[:2])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        expected = model.itm_logits(model.encode_image(images), model.encode_text(ids, mask), mask)
        got = loaded.itm_logits(loaded.encode_image(images), loaded.encode_text(ids, mask), mask)
    assert torch.equal(expected, got)
    unfrozen = loaded.with_config(vision_trainable_blocks=None)
    assert unfrozen.frozen_blocks == 0 and all(p.requires_grad for p in unfrozen.visual.parameters())
    assert torch.equal(unfrozen.itm_head.weight, loaded.itm_head.weight)
    # the models package does not know ALBEF: the checkpoint names the module that registers it, so a fresh
    # process loads it without importing AMC's code first
    assert json.loads((tmp_path / "albef" / "config.json").read_text())["module"] == "vlrepro.amc.model"
    code = f"from vlrepro.models import load_pretrained; print(type(load_pretrained({str(tmp_path / 'albef')!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "vlrepro.amc.model.ALBEF" in out.stdout, out.stderr


def test_params_pretrain_section_rejects_unknown_sets():
    with pytest.raises(ValueError, match="unknown pre-training sets"):
        AMCParams(pretrain={"sets": ["det"]})
