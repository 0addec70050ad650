"""AMC units: the loss on hand-computed maps, GradCAM hooks vs a direct autograd gradient, second-order
gradients reaching the model, the pointing-game hit rule, and one training step of the ALBEF losses."""

import pytest
import torch
from torch import nn

from vlrepro.amc.config import AMCParams, VariantParams
from vlrepro.amc.model import ALBEF
from vlrepro.amc.run import claim_rows
from vlrepro.amc.train import albef_amc_loss
from vlrepro.explain.gradcam import AttentionRecorder, attention_gradcam, upsample
from vlrepro.losses.amc import AMCWeights, amc_loss, amc_max_loss, amc_mean_loss, box_masks, normalise_per_sample
from vlrepro.metrics.pointing import argmax_points, point_in_boxes, pointing_hits, proposal_hit
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, train_wordpiece

# --- AMC loss by hand -----------------------------------------------------------------------------------
# sample 0: heat [[1.0, 0.0], [0.5, 0.25]], mask [[1, 0], [0, 0]]
# sample 1: heat [[0.9, 0.8], [0.6, 0.0]],  mask [[0, 1], [1, 0]]
HEAT = torch.tensor([[[1.0, 0.0], [0.5, 0.25]], [[0.9, 0.8], [0.6, 0.0]]])
MASK = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])


def test_l_mean_pools_inside_and_outside_over_the_batch():
    # inside: (1.0 + 0.8 + 0.6) / 3 = 0.8; outside: (0 + 0.5 + 0.25 + 0.9 + 0) / 5 = 0.33
    assert amc_mean_loss(HEAT, MASK, delta=0.7).item() == pytest.approx(0.33 - 0.8 + 0.7)
    assert amc_mean_loss(HEAT, MASK, delta=0.1).item() == 0.0  # hinge: 0.33 - 0.8 + 0.1 < 0


def test_l_max_is_a_per_sample_hinge_averaged():
    # sample 0: max out 0.5, max in 1.0 -> max(0, 0.5 - 1.0 + 0.5) = 0; sample 1: 0.9 - 0.8 + 0.5 = 0.6
    assert amc_max_loss(HEAT, MASK, delta=0.5).item() == pytest.approx(0.3)


def test_amc_loss_weights_the_two_terms():
    out = amc_loss(HEAT, MASK, AMCWeights(delta1=0.7, delta2=0.5, lambda1=0.2, lambda2=0.8))
    assert out["amc"].item() == pytest.approx(0.2 * 0.23 + 0.8 * 0.3)
    assert out["amc_mean"].item() == pytest.approx(0.23) and out["amc_max"].item() == pytest.approx(0.3)


def test_box_masks_and_normalisation():
    m = box_masks(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), 3, 4)  # pixel centres 1.5, 2.5 in x; 0.5, 1.5 in y
    assert m[0].tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    n = normalise_per_sample(torch.tensor([[[2.0, 4.0], [3.0, 6.0]]]))
    assert torch.allclose(n[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]), atol=1e-6)


# --- pointing game ----------------------------------------------------------------------------------------


def test_point_on_a_border_is_a_miss_strictly_inside_a_hit():
    box = (2.0, 2.0, 6.0, 6.0)
    assert not point_in_boxes(2.0, 4.0, [box]) and not point_in_boxes(4.0, 6.0, [box])
    assert not point_in_boxes(6.0, 6.0, [box])
    assert point_in_boxes(2.5, 5.5, [box])


def test_several_boxes_any_one_counts():
    boxes = [(0.0, 0.0, 1.0, 1.0), (3.0, 3.0, 5.0, 5.0)]
    assert point_in_boxes(4.0, 4.0, boxes) and not point_in_boxes(2.0, 2.0, boxes)


def test_pointing_hits_use_the_argmax_pixel_centre():
    heat = torch.zeros(3, 4, 5)
    heat[0, 2, 1] = 1.0  # pixel x=1, y=2 -> point (1.5, 2.5)
    heat[1, 2, 1] = 1.0
    # sample 2 is flat: the first pixel (0, 0) wins the tie -> point (0.5, 0.5)
    assert argmax_points(heat).tolist() == [[1.5, 2.5], [1.5, 2.5], [0.5, 0.5]]
    boxes = [[(1.0, 2.0, 2.0, 3.0)], [(9.0, 9.0, 10.0, 10.0), (1.5, 0.0, 4.0, 4.0)], [(0.0, 0.0, 1.0, 1.0)]]
    assert pointing_hits(heat, boxes) == [True, False, True]  # sample 1: 1.5 lies on the second box's edge


def test_proposal_ranking_heat_over_sqrt_area():
    heat = torch.zeros(8, 8)
    heat[0:2, 0:2] = 1.0  # 4 units in a 2x2 box: 4 / 2 = 2; the 8x8 box holds the same 4 units: 4 / 8 = 0.5
    proposals = [(0.0, 0.0, 8.0, 8.0), (0.0, 0.0, 2.0, 2.0)]
    assert proposal_hit(heat, proposals, [(0.0, 0.0, 2.0, 2.0)])
    assert not proposal_hit(heat, proposals, [(0.0, 0.0, 8.0, 8.0)])


# --- a tiny ALBEF -----------------------------------------------------------------------------------------

TEXTS = ["a red circle left of a blue square", "the green star", "a big striped ring right of a cross"]


@pytest.fixture(scope="module")
def tiny() -> ALBEF:
    torch.manual_seed(0)
    tok = train_wordpiece(TEXTS, vocab_size=96)
    vision = ViTConfig(img_size=24, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)  # 3x3 grid
    text = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=3, num_heads=2,
                      intermediate_size=32, mlm_head=False)
    clip = DualEncoder(CLIPConfig(vision=vision, text=text, embed_dim=8), tok)
    return ALBEF.from_dual_encoder(clip, text_layers=1, vision_trainable_blocks=1).train()


def _inputs(model: ALBEF):
    torch.manual_seed(1)
    images = torch.rand(3, 3, 24, 24)
    enc = model.text.tokenize(TEXTS)
    return images, enc["input_ids"], enc["attention_mask"]


def test_grid_comes_from_the_model(tiny):
    assert tiny.grid == (3, 3) and len(tiny.fusion) == 2


def test_frozen_prefix_path_equals_the_full_vit(tiny):
    images, _, _ = _inputs(tiny)
    assert torch.allclose(tiny.encode_image(images), tiny.visual(images), atol=1e-6)


class _Leaf(nn.Module):
    """Replaces the probabilities by a detached leaf with the same values: the gradient w.r.t. it is the
    plain autograd gradient, independent of any hook."""

    def forward(self, x):
        self.leaf = x.detach().requires_grad_(True)
        return self.leaf


@pytest.mark.parametrize("layer", [0, 1])
def test_gradcam_from_hooks_equals_direct_autograd(tiny, layer):
    images, ids, mask = _inputs(tiny)
    tokens = tiny.encode_image(images)
    hidden = tiny.encode_text(ids, mask)
    with AttentionRecorder(tiny.attention_module(layer)) as rec:
        logits = tiny.itm_logits(tokens, hidden, mask)
        heat = attention_gradcam(logits[:, 1].sum(), rec.last, mask, tiny.grid)

    ca = tiny.fusion[layer].crossattention
    original, ca.probs = ca.probs, _Leaf()
    try:
        logits_direct = tiny.itm_logits(tokens, hidden, mask)
        (g,) = torch.autograd.grad(logits_direct[:, 1].sum(), ca.probs.leaf)
        p = ca.probs.leaf.detach()
    finally:
        ca.probs = original
    assert torch.allclose(logits, logits_direct)
    b, heads, length, _ = p.shape
    expected = torch.zeros(b, 9)
    for i in range(b):
        real = [t for t in range(length) if mask[i, t]]
        for h in range(heads):
            for t in real:
                expected[i] += torch.relu(p[i, h, t, 1:] * g[i, h, t, 1:].clamp(min=0))
        expected[i] /= heads * len(real)
    assert heat.shape == (3, 3, 3)
    assert torch.allclose(heat.detach().reshape(3, 9), expected, atol=1e-7)
    assert expected.abs().sum() > 0
    # the evaluation entry point gives the same map, upsampled
    assert torch.allclose(tiny.gradcam(images, ids, mask, layer, size=(3, 3)), heat.detach(), atol=1e-6)


def test_amc_gradient_reaches_the_parameters_second_order(tiny):
    images, ids, mask = _inputs(tiny)
    tiny.zero_grad(set_to_none=True)
    tokens = tiny.encode_image(images)
    hidden = tiny.encode_text(ids, mask)
    with AttentionRecorder(tiny.attention_module(0)) as rec:
        logits = tiny.itm_logits(tokens, hidden, mask)
    heat = attention_gradcam(logits[:, 1].sum(), rec.last, mask, tiny.grid, create_graph=True)
    heat = normalise_per_sample(upsample(heat, (24, 24)))
    masks = box_masks(torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 24.0, 24.0], [16.0, 0.0, 24.0, 8.0]]), 24, 24)
    amc_loss(heat, masks, AMCWeights(delta1=1.0, delta2=1.0))["amc"].backward()

    def moved(p):
        return p.grad is not None and p.grad.abs().sum() > 0

    # The ITM head and the layer after the heatmap's only influence the heatmap through the gradient G:
    # they get a gradient only through the second-order (create_graph) path.
    assert moved(tiny.itm_head.weight)
    assert moved(tiny.fusion[1].layer.output.dense.weight)
    assert moved(tiny.fusion[0].crossattention.query.weight)
    assert moved(tiny.text.bert.encoder.layer[0].attention.self.query.weight)
    assert moved(tiny.visual.body.blocks[-1].attn.qkv.weight)  # trainable ViT block
    assert tiny.visual.body.blocks[0].attn.qkv.weight.grad is None  # frozen prefix
    tiny.zero_grad(set_to_none=True)


def test_training_losses_of_one_batch(tiny):
    images, ids, mask = _inputs(tiny)
    batch = {
        "images": images, "input_ids": ids, "attention_mask": mask, "mlm_ids": ids.clone(),
        "mlm_labels": torch.where(mask.bool(), ids, torch.full_like(ids, -100)),
        "masks": box_masks(torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 3), 24, 24),
        "has_box": torch.tensor([True, False, True]), "image_ids": torch.tensor([0, 1, 1]),
    }  # fmt: skip
    torch.manual_seed(0)
    out = albef_amc_loss(tiny, batch, VariantParams())
    assert {"loss", "itc", "itm", "mlm", "amc", "amc_mean", "amc_max"} <= set(out)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    out["loss"].backward()
    torch.manual_seed(0)
    base = albef_amc_loss(tiny, batch, VariantParams(lambda1=0, lambda2=0))
    assert "amc" not in base
    tiny.zero_grad(set_to_none=True)


def test_params_name_variants_and_claims():
    params = AMCParams()
    with pytest.raises(KeyError, match="no variant 'nope'"):
        params.variant("nope")
    with pytest.raises(ValueError, match="must define"):
        AMCParams(variants={"amc": VariantParams()})
    rows = claim_rows(tuple(params.variants))
    assert {(r["variant"], r["reference_variant"]) for r in rows} == {
        ("amc", "baseline"), ("amc", "mean_only"), ("amc", "max_only")}


def test_variants_without_a_gradcam_layer_take_the_sections():
    variants = {"baseline": {"lambda1": 0, "lambda2": 0}, "amc": {}, "last": {"gradcam_layer": -1}}
    params = AMCParams.model_validate({"gradcam_layer": 2, "variants": variants})
    assert [params.variant(n).gradcam_layer for n in variants] == [2, 2, -1]
    assert params.variant("baseline").lambda1 == 0
    defaults = AMCParams.model_validate({"gradcam_layer": 1}).variants  # the default variants take it too
    assert {v.gradcam_layer for v in defaults.values()} == {1} and len(defaults) == len(AMCParams().variants)
    assert {v.gradcam_layer for v in AMCParams.model_validate({"variants": variants}).variants.values()} == {0, -1}
