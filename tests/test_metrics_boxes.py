import torch
from torchvision.ops import box_iou

from vlrepro.metrics.boxes import acc_at_iou, cxcywh_to_xyxy, paired_iou, xyxy_to_cxcywh


def test_paired_iou_hand_computed():
    pred = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 2, 2]])
    gt = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10], [5, 5, 6, 6]])
    # 50 overlap / 150 union; identical; disjoint
    assert torch.allclose(paired_iou(pred, gt), torch.tensor([1 / 3, 1.0, 0.0]))


def test_paired_iou_matches_torchvision_diagonal():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 50
    wh = torch.rand(200, 2, generator=g) * 30 + 1
    a = torch.cat([xy, xy + wh], 1)
    xy2 = xy + torch.randn(200, 2, generator=g) * 5
    b = torch.cat([xy2, xy2 + wh * (0.5 + torch.rand(200, 2, generator=g))], 1)
    assert torch.allclose(paired_iou(a, b), box_iou(a, b).diagonal(), atol=1e-6)


def test_acc_at_iou_threshold_is_inclusive():
    pred = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    gt = torch.tensor([[0.0, 0, 10, 20], [0, 0, 10, 21]])  # IoU exactly 0.5, then just below
    assert acc_at_iou(pred, gt, 0.5) == 0.5


def test_box_format_round_trip():
    b = torch.tensor([[1.0, 2, 5, 10]])
    assert torch.equal(xyxy_to_cxcywh(b), torch.tensor([[3.0, 6, 4, 8]]))
    assert torch.equal(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
