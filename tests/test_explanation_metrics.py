"""Explanation scores (mIoU rules, insertion/deletion AUC) on hand-computed cases and against a direct numpy
computation; RISE, attention rollout and Grad-CAM against what they are defined to compute."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlrepro.explain.rise import rise, rise_masks
from vlrepro.explain.rollout import attention_rollout
from vlrepro.metrics.explanation import auc, binarise, gaussian_blob, insertion_deletion, iou, random_maps
from vlrepro.models.backbones import ViTBackbone, ViTConfig


def test_binarise_rules_on_a_hand_case():
    m = torch.tensor([[[0.0, 1.0], [2.0, 5.0]]])  # mean 2, population std sqrt(3.5) = 1.87 -> cut 3.87
    assert binarise(m, "mean_std").tolist() == [[[False, False], [False, True]]]
    assert binarise(m, "half").tolist() == [[[False, False], [False, True]]]  # 0.5 of [0, 5] = 2.5
    m2 = torch.tensor([[[1.0, 2.0], [3.0, 3.0]]])  # min-max: 0, .5, 1, 1 -> three pixels >= 0.5
    assert binarise(m2, "half").sum().item() == 3
    with pytest.raises(ValueError, match="rule"):
        binarise(m, "otsu")


def test_iou_on_a_hand_case():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2, :2] = True  # 4 px
    b[0, :2, 1:3] = True  # 4 px, 2 shared -> 2 / 6
    assert iou(a, b).tolist() == pytest.approx([2 / 6, 0.0])  # the second pair: both empty


def test_auc_is_the_normalised_trapezoid():
    assert auc(torch.tensor([0.0, 1.0, 1.0])).item() == pytest.approx((2 - 0 - 0.5) / 2)
    assert auc(torch.ones(5)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        auc(torch.ones(1))


def test_insertion_deletion_match_a_direct_numpy_computation():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8)
    labels = torch.tensor([0, 1, 2])
    w = torch.randn(3 * 64, 4)

    def predict(x):
        return (x.flatten(1) @ w).softmax(-1)

    out = insertion_deletion(predict, images, maps, labels, steps=4)
    for b in range(3):
        order = np.argsort(-maps[b].numpy().ravel(), kind="stable")
        ins, dele = [], []
        for k in (0, 16, 32, 48, 64):
            keep = np.zeros(64, bool)
            keep[order[:k]] = True
            keep = torch.from_numpy(keep.reshape(1, 8, 8))
            ins.append(predict((images[b] * keep)[None])[0, labels[b]].item())
            dele.append(predict((images[b] * ~keep)[None])[0, labels[b]].item())
        assert out["insertion"][b].tolist() == pytest.approx(ins, abs=1e-6)
        assert out["deletion"][b].tolist() == pytest.approx(dele, abs=1e-6)
        trapezoid = (sum(ins) - ins[0] / 2 - ins[-1] / 2) / 4
        assert out["insertion_auc"][b].item() == pytest.approx(trapezoid, abs=1e-6)


def test_controls_are_centred_and_seeded():
    blob = gaussian_blob((8, 8))
    assert blob.argmax().item() in {27, 28, 35, 36}  # one of the four centre pixels
    assert torch.allclose(blob, blob.flip(0)) and torch.allclose(blob, blob.T)
    assert torch.equal(random_maps(2, (4, 4), seed=3), random_maps(2, (4, 4), seed=3))


def test_rise_finds_the_pixels_the_model_reads():
    def predict(x):  # class 0's probability grows with the brightness of the top-left quarter only
        p = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([p, 1 - p], dim=1)

    masks = rise_masks(500, (16, 16), cells=4, p=0.5, seed=0)
    assert masks.shape == (500, 1, 16, 16) and 0.4 < masks.mean().item() < 0.6
    sal = rise(predict, torch.ones(1, 3, 16, 16), torch.tensor([0]), masks, p=0.5)[0]
    # A pixel the model ignores is independent of P: its saliency E[P M] / p = E[P] (~0.5); a read one is higher.
    expected_p = masks[:, 0, :8, :8].mean().item()
    assert sal[8:, 8:].mean().item() == pytest.approx(expected_p, abs=0.05)
    assert sal[:8, :8].mean().item() > sal[8:, 8:].mean().item() + 0.08


def _manual_rollout(vit: ViTBackbone, images: torch.Tensor) -> torch.Tensor:
    """Attention rollout from the blocks' own weights, without hooks (the reference)."""
    body = vit.body
    x = body._pos_embed(body.patch_embed(vit.normalise(images)))
    n = x.shape[1]
    flow = torch.eye(n).expand(len(images), n, n)
    for block in body.blocks:
        attn = block.attn
        y = block.norm1(x)
        qkv = attn.qkv(y).reshape(len(x), n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        a = ((qkv[0] * attn.scale) @ qkv[1].transpose(-2, -1)).softmax(-1).mean(1)
        a = 0.5 * a + 0.5 * torch.eye(n)
        flow = (a / a.sum(-1, keepdim=True)) @ flow
        x = block(x)
    return flow[:, 0, 1:].reshape(len(images), *vit.grid)


def test_attention_rollout_matches_a_manual_computation():
    torch.manual_seed(0)
    vit = ViTBackbone(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ours, ref = attention_rollout(vit, images), _manual_rollout(vit, images)
    assert ours.shape == (2, 4, 4)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert all(b.attn.fused_attn == vit.body.blocks[0].attn.fused_attn for b in vit.body.blocks)  # restored


def test_gradcam_explainer_matches_a_manual_grad_cam():
    from vlrepro.ala.run import gradcam_explainer

    class Net(nn.Module):  # what gradcam_explainer needs of an ALA: .pb.conv2 and .logits
        def __init__(self):
            super().__init__()
            self.pb = nn.Module()
            self.pb.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.pb.conv2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            class Out:
                pass

            out = Out()
            out.logits = self.fc(self.pb.conv2(self.pb.conv1(F.avg_pool2d(x, 4))).amax(dim=(-2, -1)))
            return out

    torch.manual_seed(0)
    net, images, targets = Net(), torch.rand(2, 3, 16, 16), torch.tensor([1, 3])
    cams = gradcam_explainer(net)(images, targets)
    acts = net.pb.conv2(net.pb.conv1(F.avg_pool2d(images, 4)))
    logits = net.fc(acts.amax(dim=(-2, -1)))
    grads = torch.autograd.grad(logits[torch.arange(2), targets].sum(), acts)[0]
    manual = F.relu((grads.mean(dim=(-2, -1), keepdim=True) * acts).sum(1, keepdim=True))
    manual = F.interpolate(manual, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    assert cams.shape == (2, 16, 16)
    assert torch.allclose(cams, manual.detach(), atol=1e-5)
