"""GLIP's building blocks: X-MHA's shared score matrix and the token-level focal loss."""

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from vlrepro.losses.focal import token_focal_loss
from vlrepro.models.blocks import BiCrossAttention, BiFusionLayer


def test_x_mha_reads_both_ways_through_one_score_matrix():
    torch.manual_seed(0)
    attn = BiCrossAttention(visual_dim=12, text_dim=10, dim=8, num_heads=2)
    visual, words = torch.randn(2, 5, 12), torch.randn(2, 3, 10)
    padding = torch.tensor([[False, False, True], [False, False, False]])
    dv, dl = attn(visual, words, padding)
    s = attn.scores(visual, words)  # (B, heads, N, L)
    assert s.shape == (2, 2, 5, 3)

    def heads(x):
        return x.unflatten(-1, (2, 4)).transpose(1, 2)

    masked = s.masked_fill(padding[:, None, None, :], float("-inf"))
    want_v = attn.out_v((masked.softmax(-1) @ heads(attn.value_l(words))).transpose(1, 2).flatten(2))
    want_l = attn.out_l((s.transpose(-1, -2).softmax(-1) @ heads(attn.value_v(visual))).transpose(1, 2).flatten(2))
    assert torch.allclose(dv, want_v, atol=1e-6) and torch.allclose(dl, want_l, atol=1e-6)
    # the visual side never reads a padded word: changing it changes nothing there
    other = words.clone()
    other[0, 2] += 5.0
    assert torch.allclose(attn(visual, other, padding)[0], dv, atol=1e-6)


def test_fusion_layer_starts_as_a_small_step_and_keeps_shapes():
    torch.manual_seed(0)
    layer = BiFusionLayer(visual_dim=12, text_dim=10, dim=8, num_heads=2, init_scale=0.25)
    visual, words = torch.randn(2, 5, 12), torch.randn(2, 3, 10)
    v, w = layer(visual, words)
    dv, dl = layer.attn(layer.norm_v(visual), layer.norm_l(words))
    assert torch.allclose(v, visual + 0.25 * dv, atol=1e-6) and torch.allclose(w, words + 0.25 * dl, atol=1e-6)
    (v.sum() + w.sum()).backward()
    assert layer.scale_v.grad is not None and layer.attn.k.weight.grad is not None


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.0)])
def test_token_focal_loss_matches_torchvision(alpha, gamma):
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    targets = (torch.rand(2, 6, 5) > 0.7).float()
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    got = token_focal_loss(logits, targets, mask, num_positive=4, alpha=alpha, gamma=gamma)
    reference = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    assert got == pytest.approx(float((reference * mask[:, None, :]).sum() / 4), rel=1e-6)
    # padding tokens contribute nothing, whatever their logits
    moved = logits.clone()
    moved[0, :, 3:] += 10.0
    assert token_focal_loss(moved, targets, mask, 4, alpha, gamma) == pytest.approx(float(got), rel=1e-6)
    assert token_focal_loss(logits, targets, mask, 0, alpha, gamma) == pytest.approx(float(got) * 4, rel=1e-6)
