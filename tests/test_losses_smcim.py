"""SMCIM's losses: box losses against torchvision, self-paced weights by hand, the sign of σ's gradient."""

import math

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss

from vlrepro.losses.boxes import giou_loss_per_sample, l1_per_sample
from vlrepro.losses.self_paced import SelfPacedLoss, difficulty
from vlrepro.metrics.boxes import cxcywh_to_xyxy


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre, size = torch.rand(n, 2, generator=g), 0.05 + 0.5 * torch.rand(n, 2, generator=g)
    return torch.cat([centre, size], -1)


def test_l1_matches_torch_per_sample():
    pred, target = random_boxes(32, 0), random_boxes(32, 1)
    expected = torch.nn.functional.l1_loss(pred, target, reduction="none").sum(-1)
    torch.testing.assert_close(l1_per_sample(pred, target), expected)


def test_giou_matches_torchvision_including_disjoint_and_identical_boxes():
    pred, target = random_boxes(64, 2), random_boxes(64, 3)
    pred[0] = target[0]  # identical: loss 0
    pred[1], target[1] = torch.tensor([0.1, 0.1, 0.1, 0.1]), torch.tensor([0.9, 0.9, 0.1, 0.1])  # far apart: > 1
    expected = generalized_box_iou_loss(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target), reduction="none")
    ours = giou_loss_per_sample(pred, target)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert ours[0].abs() < 1e-5 and ours[1] > 1


def test_giou_gradients_match_torchvision():
    pred, target = random_boxes(16, 4).requires_grad_(), random_boxes(16, 5)
    giou_loss_per_sample(pred, target).sum().backward()
    ours = pred.grad.clone()
    pred.grad = None
    generalized_box_iou_loss(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target), reduction="sum").backward()
    torch.testing.assert_close(ours, pred.grad, atol=1e-4, rtol=1e-4)


def test_self_paced_total_by_hand():
    # Two samples. sigma = 2, lambda = 0.5:
    #   d0 = exp(l1^2 / 4) = exp(0.25), exp(1);  d1 = exp(giou^2 / 4) = exp(0.04), exp(0.09)
    #   total_i = d0*l1 + d1*giou - 0.5*(d0 + d1), averaged
    loss = SelfPacedLoss(sigma_init=2.0, lam=0.5)
    l1, giou = torch.tensor([1.0, 2.0]), torch.tensor([0.4, 0.6])
    out = loss(l1, giou)
    d0, d1 = [math.exp(0.25), math.exp(1.0)], [math.exp(0.04), math.exp(0.09)]
    rows = [d0[i] * l1[i].item() + d1[i] * giou[i].item() - 0.5 * (d0[i] + d1[i]) for i in range(2)]
    assert out["loss"].item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    assert out["d_l1"].item() == pytest.approx(sum(d0) / 2, rel=1e-6)
    assert difficulty(torch.tensor(3.0), torch.tensor(1.5), mu=1.5).item() == pytest.approx(math.e, rel=1e-6)


def test_harder_samples_weigh_more():
    loss = SelfPacedLoss(sigma_init=2.5)
    out = [loss(torch.tensor([x]), torch.tensor([x]))["d_l1"].item() for x in (0.1, 0.5, 1.0, 2.0)]
    assert out == sorted(out) and out[0] > 1


@pytest.mark.parametrize(("value", "sign"), [(1.5, -1), (0.3, 1)])
def test_sigma_gradient_sign_above_and_below_lambda(value, sign):
    # d/dσ [d·(L−λ)] = (L−λ)·(−2L²d/σ³): negative above λ (σ grows, weights relax), positive below.
    loss = SelfPacedLoss(sigma_init=2.5, lam=0.75)
    loss(torch.tensor([value, value]), torch.tensor([value, value]))["loss"].backward()
    assert torch.all(torch.sign(loss.sigma.grad) == sign)
    sigma, d = 2.5, math.exp(value**2 / 2.5**2)
    expected = (value - 0.75) * (-2 * value**2 * d / sigma**3)
    torch.testing.assert_close(loss.sigma.grad, torch.full((2,), expected), rtol=1e-5, atol=1e-7)


def test_detached_weights_act_as_sample_weights_for_the_network():
    l1 = torch.tensor([0.5, 2.0], requires_grad=True)
    giou = torch.tensor([0.2, 0.9], requires_grad=True)
    SelfPacedLoss(sigma_init=2.5, lam=0.75, detach=True)(l1, giou)["loss"].backward()
    torch.testing.assert_close(l1.grad, torch.exp(l1.detach() ** 2 / 6.25) / 2)
    attached_l1 = l1.detach().clone().requires_grad_()
    SelfPacedLoss(sigma_init=2.5, lam=0.75, detach=False)(attached_l1, giou.detach())["loss"].backward()
    # not detached: d·(1 + 2L(L−λ)/σ²) / N
    x = l1.detach()
    torch.testing.assert_close(attached_l1.grad, torch.exp(x**2 / 6.25) * (1 + 2 * x * (x - 0.75) / 6.25) / 2)


def test_sigma_must_be_positive():
    with pytest.raises(ValueError, match="sigma_init"):
        SelfPacedLoss(sigma_init=0.0)
