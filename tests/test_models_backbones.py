"""timm backbones: shapes, input convention, and loading a local timm checkpoint (the paper-profile path)."""

import numpy as np
import pytest
import torch

from vlrepro.models.backbones import CNNBackbone, CNNConfig, ViTBackbone, ViTConfig, images_to_tensor

SMALL_CNN = CNNConfig(channels=(8, 16, 24, 32))
SMALL_VIT = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def test_cnn_gives_one_map_per_stage_fine_to_coarse():
    cnn = CNNBackbone(SMALL_CNN).eval()
    maps = cnn(torch.rand(2, 3, 64, 64))
    assert cnn.channels == [8, 16, 24, 32] and cnn.reductions == [4, 8, 16, 32]
    assert [tuple(m.shape) for m in maps] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4), (2, 32, 2, 2)]


def test_vit_tokens_patch_grid_and_intermediates():
    vit = ViTBackbone(SMALL_VIT).eval()
    images = torch.rand(2, 3, 32, 32)
    tokens = vit(images)
    assert tokens.shape == (2, 1 + 16, 32) and vit.grid == (4, 4) and vit.num_prefix_tokens == 1
    grid = vit.patch_grid(tokens)
    assert grid.shape == (2, 32, 4, 4)
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 2])  # row-major: patch (0, 1) is token 1 + 1
    assert [tuple(t.shape) for t in vit.intermediates(images, [0, 1])] == [(2, 32, 4, 4)] * 2


def test_images_to_tensor_is_chw_in_unit_range():
    images = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    images[0, 1, 2] = (255, 0, 51)
    t = images_to_tensor(images)
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float32
    assert t[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_weights_load_from_a_local_timm_checkpoint(tmp_path, kind):
    import timm
    from safetensors.torch import save_file

    # A full timm model (classifier included), as a released checkpoint would be.
    if kind == "cnn":
        src = timm.create_model("resnet10t", channels=(8, 16, 24, 32), num_classes=7)
    else:
        src = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                mlp_ratio=2.0)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    if kind == "cnn":
        model = CNNBackbone(CNNConfig(channels=(8, 16, 24, 32), weights=str(path)))
        theirs, mine = src.conv1[0].weight, model.body.conv1[0].weight
    else:
        model = ViTBackbone(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, weights=str(path)))
        theirs, mine = src.blocks[1].mlp.fc1.weight, model.body.blocks[1].mlp.fc1.weight
    assert torch.equal(theirs, mine)


def test_missing_weights_file_is_an_error_not_a_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        CNNBackbone(CNNConfig(weights=str(tmp_path / "nope.pth")))
