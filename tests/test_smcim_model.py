"""CA2M and the SMCIM / TransVG models: shapes, masking of padded words, and learning on a tiny set."""

import pytest
import torch

from vlrepro.models.blocks import CA2M
from vlrepro.smcim.model import SMCIM, SMCIMConfig, TransVG, build, kept_maps

CFG = SMCIMConfig(visual_channels=(8, 16, 32), text_width=12, grid=(4, 4), dim=16, stage1_depth=2, stage2_depth=2,
                  num_heads=2)  # fmt: skip


def inputs(batch: int = 3, length: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, c, s, s, generator=g) for c, s in ((8, 8), (16, 4), (32, 2))]
    words = torch.randn(batch, 3, length, 12, generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 4:] = 0  # sample 0 has 4 real tokens
    return maps, words, mask


def test_ca2m_shapes_and_padded_words_are_never_read():
    torch.manual_seed(0)
    block = CA2M(dim=16, num_heads=2).eval()
    visual, words = torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    padding = torch.tensor([[False, False, False, True, True], [False] * 5])
    v, w = block(visual, words, padding)
    assert v.shape == (2, 9, 16) and w.shape == (2, 5, 16)
    changed = words.clone()
    changed[0, 3:] = 100.0  # garbage in the padded positions
    v2, w2 = block(visual, changed, padding)
    torch.testing.assert_close(v2, v)  # the visual side ignores padded words
    torch.testing.assert_close(w2[:, :3], w[:, :3])  # real words read only visual tokens
    unmasked, _ = block(visual, changed, None)
    assert not torch.allclose(unmasked[0], v[0])  # without the mask the garbage leaks: the mask does the work


@pytest.mark.parametrize("cls", [SMCIM, TransVG])
def test_boxes_are_normalised_and_ignore_padded_words(cls):
    torch.manual_seed(0)
    model = cls(CFG).eval()
    maps, words, mask = inputs()
    boxes, cells = model(maps, words, mask)
    assert boxes.shape == (3, 4) and boxes.min() >= 0 and boxes.max() <= 1
    assert cells.shape == (3, CFG.grid[0] * CFG.grid[1])
    words[0, :, 4:] = 50.0
    torch.testing.assert_close(model(maps, words, mask).boxes, boxes)
    torch.testing.assert_close(model(maps, words, mask).cell_logits, cells)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_levels_select_the_grid_stride_map_first_and_the_last_blocks(levels):
    torch.manual_seed(0)
    cfg = SMCIMConfig(**{**CFG.__dict__, "levels": levels})
    model = SMCIM(cfg).eval()
    assert len(model.stage1) == levels and model.head[0].in_features == levels * CFG.dim
    maps, words, mask = inputs()
    base = model(maps, words, mask).boxes

    def changes(stage: int) -> bool:  # does perturbing one stage map change the boxes?
        moved = [m + 10.0 if i == stage else m for i, m in enumerate(maps)]
        return not torch.allclose(model(moved, words, mask).boxes, base)

    # the map at the grid's stride (index 1) always; the coarser (2) from 2 levels; the finer (0) only with 3
    assert [changes(0), changes(1), changes(2)] == [levels == 3, True, levels >= 2]
    words[:, 0] += 10.0  # the first (shallowest) text block: used only with 3 levels
    assert torch.allclose(model(maps, words, mask).boxes, base) == (levels < 3)


def test_kept_maps():
    assert [kept_maps(3, k) for k in (1, 2, 3)] == [[1], [1, 2], [0, 1, 2]]
    assert [kept_maps(4, k) for k in (1, 2)] == [[3], [2, 3]]  # not SMCIM's three maps: the last ones


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="levels = 4"):
        SMCIMConfig(levels=4)
    with pytest.raises(ValueError, match="transformer"):
        SMCIM(SMCIMConfig(fusion="transformer"))
    assert isinstance(build(SMCIMConfig(fusion="transformer", dim=16, num_heads=2)), TransVG)


@pytest.mark.parametrize("cls", [SMCIM, TransVG])
def test_learns_a_tiny_set(cls):
    # 16 samples whose box is written into the first visual cell and the first word: fit them.
    torch.manual_seed(0)
    maps, words, mask = inputs(batch=16, seed=1)
    target = torch.rand(16, 4) * 0.5 + 0.25
    maps[-1][:, :4, 0, 0] = target * 4
    words[:, :, 1, :4] = target.unsqueeze(1) * 4
    model = cls(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = (model(maps, words, mask).boxes - target).abs().sum(-1).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
