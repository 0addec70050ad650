"""GLIP's head: targets on a hand-made grid, the loss's pieces, and a head that learns to detect."""

import pytest
import torch
from torchvision.ops import box_iou

from vlrepro.glip.loss import assign, glip_loss
from vlrepro.glip.model import GLIPConfig, GLIPHead, upsample
from vlrepro.glip.prompts import class_scores


def test_assignment_by_hand():
    cmap = torch.tensor([[False, True, True, False, False], [False, False, False, True, False]])  # 2 classes
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]])  # the second inside the first
    t = assign([boxes], [torch.tensor([0, 1])], [cmap], (4, 4), max_len=5)
    grid = t.assigned[0].view(4, 4)
    assert grid[0, 0] == grid[0, 1] == grid[1, 0] == 0 and grid[1, 1] == 1  # the smaller box takes its cell
    assert (grid[2:] == -1).all() and (grid[:, 2:] == -1).all()
    assert torch.equal(t.tokens[0, 0], cmap[0].float()) and torch.equal(t.tokens[0, 5], cmap[1].float())
    assert t.tokens[0, 15].sum() == 0
    # centre (0.5, 0.5) in box (0, 0, 2, 2): sqrt(0.5/1.5 * 0.5/1.5) = 1/3; (1.5, 1.5) in (1, 1, 2, 2): 1
    assert t.centerness[0, 0].item() == pytest.approx(1 / 3) and t.centerness[0, 5].item() == pytest.approx(1.0)
    # centre sampling: a long box's far cells are not positives
    long = assign([torch.tensor([[0.0, 0.0, 4.0, 1.0]])], [torch.tensor([0])], [cmap], (4, 4), max_len=5, radius=1.0)
    assert long.assigned[0, :4].tolist() == [-1, 0, 0, -1]
    empty = assign([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], [cmap], (4, 4), max_len=5)
    assert (empty.assigned == -1).all()


def test_a_batch_is_assigned_as_its_images_one_by_one():
    # images padded to the most boxes are assigned together: padding must claim no cell, an empty image none
    g = torch.Generator().manual_seed(0)
    boxes, classes, maps = [], [], []
    for k in (3, 0, 1, 2):
        corner = torch.rand(k, 2, generator=g) * 6
        boxes.append(torch.cat([corner, corner + 1 + torch.rand(k, 2, generator=g) * 3], 1))
        classes.append(torch.randint(0, 2, (k,), generator=g))
        maps.append(torch.rand(2, 5, generator=g) > 0.5)
    batch = assign(boxes, classes, maps, (8, 8), max_len=6)
    for i in range(4):
        one = assign(boxes[i : i + 1], classes[i : i + 1], maps[i : i + 1], (8, 8), max_len=6)
        for field in ("assigned", "tokens", "boxes", "centerness"):
            assert torch.equal(getattr(batch, field)[i], getattr(one, field)[0]), (i, field)
    assert (batch.assigned[0] >= 0).any() and (batch.assigned[1] == -1).all()
    assert batch.tokens[0, :, 5].sum() == 0  # max_len beyond the maps' 5 tokens: zeros


@pytest.mark.parametrize(("size", "out"), [((2, 2), (16, 16)), ((4, 3), (16, 12)), ((5, 8), (7, 19))])
def test_upsample_is_bilinear_interpolation(size, out):
    maps = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(maps, out, mode="bilinear")
    torch.testing.assert_close(upsample(maps, *out), expected, rtol=0, atol=1e-5)


def _toy(n: int, seed: int, dim: int = 16):
    """Images of a 4x4 grid with one 2x2 object of class 0, 1 or 2; its cells carry the class's vector plus
    one for where in the object they lie (what a CNN's receptive field tells a cell)."""
    g = torch.Generator().manual_seed(seed)
    classes, corners = torch.randn(7, dim, generator=torch.Generator().manual_seed(99)).split([3, 4])
    visual = 0.3 * torch.randn(n, 16, dim, generator=g)
    label = torch.randint(0, 3, (n,), generator=g)
    x0, y0 = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 3, (n,), generator=g)
    for i in range(n):
        for dy in range(2):
            for dx in range(2):
                visual[i, (y0[i] + dy) * 4 + x0[i] + dx] += classes[label[i]] + corners[dy * 2 + dx]
    boxes = torch.stack([x0, y0, x0 + 2, y0 + 2], 1).float()
    return visual, label, boxes


@pytest.mark.parametrize("fusion_layers", [0, 2])
def test_head_learns_to_detect_on_a_toy_grid(fusion_layers):
    torch.manual_seed(0)
    dim, length = 16, 7
    cmap = torch.zeros(3, length, dtype=torch.bool)  # "[CLS] a b . c . [SEP]": class 0 is two tokens
    cmap[0, [1, 2]], cmap[1, 4], cmap[2, 6] = True, True, True
    text = torch.randn(1, length, 8, generator=torch.Generator().manual_seed(7))
    padding = torch.zeros(1, length, dtype=torch.bool)
    head = GLIPHead(GLIPConfig(visual_dim=dim, text_dim=8, dim=32, align_dim=16, fusion_layers=fusion_layers,
                               num_heads=2))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for step in range(250):
        visual, label, boxes = _toy(32, step)
        out = head(visual, (4, 4), text.expand(32, -1, -1), padding.expand(32, -1))
        targets = assign(list(boxes[:, None]), list(label[:, None]), [cmap] * 32, (4, 4), length)
        loss = glip_loss(out, targets, ~padding.expand(32, -1))
        first = first if first is not None else {k: v.item() for k, v in loss.items()}
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
    # centerness BCE has a floor (soft targets) and GIoU one per box size: the alignment term drops most
    assert float(loss["align"]) < first["align"] / 5 and float(loss["box"]) < first["box"]
    head.eval()
    visual, label, boxes = _toy(200, 10_000)
    with torch.no_grad():
        out = head(visual, (4, 4), text.expand(200, -1, -1), padding.expand(200, -1))
    scores = class_scores(out.logits.sigmoid(), cmap) * out.centerness.sigmoid()[..., None]  # (B, N, C)
    best_cell = scores.amax(-1).argmax(1)
    pred_class = scores[torch.arange(200), best_cell].argmax(-1)
    iou = box_iou(out.boxes[torch.arange(200), best_cell], boxes).diagonal()
    assert (pred_class == label).float().mean() > 0.9
    assert (iou > 0.5).float().mean() > 0.9
