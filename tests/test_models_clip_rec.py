"""CLIP-style dual encoder with its InfoNCE loss, and the minimal REC model."""

import math

import pytest
import torch

from vlrepro.losses.contrastive import LogitScale, info_nce
from vlrepro.models.backbones import CNNBackbone, CNNConfig, ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.rec import RECConfig, RECModel, cell_centres
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece

TEXT = TextConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32, mlm_head=False)
VIT = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
CNN = CNNConfig(channels=(8, 16, 24, 32))


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(["a red circle", "a blue square on the left"] * 4, vocab_size=64)


def test_info_nce_hand_computed_2x2():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = I Tᵀ = [[1, .6], [0, .8]]; rows (image->text) and columns (text->image), target = diagonal
    rows = (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(-0.8))) / 2
    cols = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-0.2))) / 2
    assert info_nce(image, text, 1.0).item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    # a larger scale sharpens the softmax: matched pairs cost less
    assert info_nce(image, text, 10.0) < info_nce(image, text, 1.0)


def test_info_nce_masks_a_repeated_image_out_of_its_own_negatives():
    a, b = [1.0, 0.0], [0.0, 1.0]
    emb = torch.tensor([a, a, b])  # image 0 twice (two captions of it), then image 1; a·b = 0
    # Rows 0 and 1: logits [1, -inf, 0] -> log(1 + 1/e); row 2: [0, 0, 1] -> log(1 + 2/e); symmetric in t2i.
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(1 + 2 * math.exp(-1))) / 3
    assert info_nce(emb, emb, 1.0, torch.tensor([0, 0, 1])).item() == pytest.approx(expected, abs=1e-6)
    assert info_nce(emb, emb, 1.0).item() > expected  # unmasked, the duplicate is a hard negative


def test_logit_scale_starts_at_inverse_temperature_and_is_clamped():
    scale = LogitScale(init_temperature=0.07, max_scale=100.0)
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale().item() == pytest.approx(100.0, rel=1e-5)
    with pytest.raises(ValueError):
        LogitScale(init_temperature=0.001, max_scale=100.0)


def test_dual_encoder_embeddings_are_normalised(tokenizer):
    model = DualEncoder(CLIPConfig(vision=VIT, text=TEXT, embed_dim=16), tokenizer).eval()
    batch = model.text.tokenize(["a red circle", "a blue square"])
    image_emb, text_emb, scale = model(torch.rand(2, 3, 32, 32), **batch)
    assert image_emb.shape == text_emb.shape == (2, 16)
    assert torch.allclose(image_emb.norm(dim=-1), torch.ones(2))
    assert torch.allclose(text_emb.norm(dim=-1), torch.ones(2))
    assert model.encode_prompts(["a circle.", "a square.", "a ring."]).shape == (3, 16)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_cell_centres_row_major():
    c = cell_centres(2, 4)
    assert c.shape == (8, 2)
    assert c[1].tolist() == pytest.approx([0.375, 0.25]) and c[4].tolist() == pytest.approx([0.125, 0.75])


def test_rec_model_outputs_a_box_per_expression(tokenizer):
    model = RECModel(RECConfig(cnn=CNN, text=TEXT, dim=32, num_heads=2), tokenizer).eval()
    batch = model.text.tokenize(["a red circle", "a blue square on the left"])
    out = model(torch.rand(2, 3, 64, 64), **batch)
    assert out.grid == (16, 16) and out.scores.shape == (2, 256) and out.cell_boxes.shape == (2, 256, 4)
    assert out.boxes.shape == (2, 4) and ((out.boxes >= 0) & (out.boxes <= 1)).all()
    best = out.scores.argmax(-1)
    assert torch.equal(out.boxes, out.cell_boxes[torch.arange(2), best])


def test_rec_model_starts_from_given_encoders(tokenizer):
    model = RECModel(RECConfig(cnn=CNN, text=TEXT, dim=32, num_heads=2))
    cnn = CNNBackbone(CNN)
    text = TextEncoder(TextConfig(**{**TEXT.__dict__, "mlm_head": True}), tokenizer)  # MLM head left behind
    model.load_encoders(cnn, text)
    assert torch.equal(model.cnn.body.conv1[0].weight, cnn.body.conv1[0].weight)
    assert torch.equal(model.text.bert.embeddings.word_embeddings.weight, text.bert.embeddings.word_embeddings.weight)
    assert model.text.tokenizer is tokenizer
