"""SMCIM's augmentations, variants, cached features and one run, on a tiny world."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vlrepro.config import ConfigError
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import build_suite
from vlrepro.models.backbones import CNNBackbone, CNNConfig
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece
from vlrepro.pretrain.data import train_texts
from vlrepro.smcim import augment, features
from vlrepro.smcim.config import AugmentParams, SMCIMParams
from vlrepro.smcim.run import train_and_evaluate
from vlrepro.transforms import swap_left_right


def test_swap_left_right_whole_words_only():
    assert swap_left_right("the leftmost circle left of the Right star") == (
        "the rightmost circle right of the Left star"
    )
    assert swap_left_right("a bright cleft") == "a bright cleft"


def test_box_transform_follows_the_image():
    size = 64
    image = torch.zeros(2, 3, size, size)
    image[:, :, 10:30, 5:20] = 1.0  # a white box xyxy (5, 10, 20, 30) in both images
    box = torch.tensor([[5.0, 10.0, 20.0, 30.0], [5.0, 10.0, 20.0, 30.0]])
    p = AugmentParams(flip_prob=0.5, colour_jitter=0.0, blur_prob=0.0)
    view = augment.draw_view(2, size, p, torch.Generator().manual_seed(3))
    view = augment.ViewParams(**{**view.__dict__, "flip": torch.tensor([True, False])})
    out, moved = augment.apply_view(image, view), augment.transform_boxes(box, view, torch.tensor([0, 1]), size)
    for i in range(2):
        ys, xs = torch.nonzero(out[i, 0] > 0.5, as_tuple=True)
        seen = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        torch.testing.assert_close(seen, moved[i], atol=1.5, rtol=0)
    assert moved[0, 0] > 32  # the flipped image's box moved to the right half


def test_blur_keeps_mass_and_zero_sigma_is_identity():
    x = torch.rand(2, 3, 16, 16)
    out = augment.gaussian_blur(x, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[0], x[0])
    assert abs(out[1, :, 4:12, 4:12].mean() - x[1, :, 4:12, 4:12].mean()) < 0.05
    assert out[1].std() < x[1].std()


def test_variants_override_and_errors_name_the_variant():
    p = SMCIMParams(variants={"full": {}, "one": {"model.levels": 1, "self_paced.enabled": False}})
    assert p.variant("one").model.levels == 1 and not p.variant("one").self_paced.enabled
    assert p.variant("full") == p.variant("full") and p.variant("full").model.levels == 3
    with pytest.raises(ConfigError, match="no variant 'two'"):
        p.variant("two")
    with pytest.raises(ValueError, match="variants.bad.*model.depth"):
        SMCIMParams(variants={"bad": {"model.depth": 1}})
    with pytest.raises(ValueError, match="variants.bad"):
        SMCIMParams(variants={"bad": {"model.levels": 7}})
    with pytest.raises(ValueError, match="text_blocks"):
        SMCIMParams(text_blocks=2)
    with pytest.raises(ValueError, match="variants.real: sets source"):  # one data folder for the whole stage
        SMCIMParams(variants={"full": {}, "real": {"source": "real"}})


def test_block_outputs_split_layers_evenly():
    hidden = tuple(torch.full((1, 2, 3), float(i)) for i in range(7))  # embeddings + 6 layers
    assert features.block_outputs(hidden, 3)[0, :, 0, 0].tolist() == [2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="text_blocks = 7"):
        features.block_outputs(hidden, 7)


TINY = {
    "referring": {"train": 12, "val": 4, "testA": 4, "testB": 4},
    "flickr": {"train": 2, "val": 2, "test": 2}, "vg": {"train": 2, "val": 2}, "det": {"train": 2, "test": 2},
    "odinw": {"shots": 1, "test": 2}, "captions": {"train": 2, "val": 2, "test": 2}, "web": {"train": 2},
    "cub": {"train": 2, "val": 2, "test": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("smcim")
    build_suite(WorldConfig.model_validate(TINY), root / "world", progress=False)
    torch.manual_seed(0)
    cnn = CNNBackbone(CNNConfig(channels=(8, 8, 16, 16))).eval()
    tok = train_wordpiece(train_texts(root / "world"), vocab_size=120)
    text = TextEncoder(TextConfig(vocab_size=120, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                                  mlm_head=False), tok).eval()  # fmt: skip
    p = SMCIMParams(
        train_sets=("refcoco",), eval_sets=("refcoco",), text_blocks=2, examples=2,
        model={"levels": 2, "dim": 8, "num_heads": 2, "stage1_depth": 1, "stage2_depth": 1},
        train={"steps": 3, "batch_size": 4, "warmup_steps": 1}, augment={"views": 2, "flip_prob": 1.0},
        variants={"full": {}, "plain": {"self_paced.enabled": False}},
    )  # fmt: skip
    for split in ("train", "val", "testA", "testB"):
        f = features.extract_split(root / "world" / "refcoco" / split, cnn, text, p, 2 if split == "train" else 1, 0)
        features.save_features(f, root / "features" / "refcoco" / f"{split}.safetensors")
    return root, p


def test_features_round_trip_views_and_swapped_texts(tiny):
    root, _ = tiny
    f = features.load_features(root / "features" / "refcoco" / "train.safetensors")
    n_images = len(np.load(root / "world" / "refcoco" / "train" / "images.npy"))
    assert f.views == 2 and [m.shape[:2] for m in f.levels] == [(2, n_images)] * 3
    assert f.states.dtype == torch.float16 and f.states.shape[1] == 2
    size = f.size[0, 0]
    from vlrepro.metrics.boxes import cxcywh_to_xyxy

    torch.testing.assert_close(cxcywh_to_xyxy(f.boxes[0]) * size, f.target_px)  # view 0 is the original
    lateral = [m for m, t in enumerate(f.texts) if "left" in t or "right" in t]
    assert lateral, "the tiny world should have some left/right expressions"
    assert all(f.text[m, 0] != f.text[m, 1] for m in lateral)  # flip_prob 1: view 1 reads the swapped text
    with pytest.raises(FileNotFoundError, match="smcim_features"):
        features.load_features(root / "nowhere.safetensors")


def test_cached_bytes_do_not_depend_on_threads_or_onednn(tiny):
    """The cache is computed in float64 and rounded to float16, so that its bytes (and the dvc.lock hashes of the
    runs that read it) do not depend on the CPU: here two summation orders, one thread with oneDNN and two
    threads without, must give the same bytes, augmented views included."""
    root, p = tiny
    torch.manual_seed(1)
    cnn = CNNBackbone(CNNConfig(channels=(16, 32, 64, 64))).eval().to(features.ENCODE_DTYPE)
    tok = train_wordpiece(train_texts(root / "world"), vocab_size=120)
    text = TextEncoder(TextConfig(vocab_size=120, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                  mlm_head=False), tok).eval().to(features.ENCODE_DTYPE)  # fmt: skip
    split, threads = root / "world" / "refcoco" / "train", torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.backends.mkldnn.flags(enabled=True):
            a = features.extract_split(split, cnn, text, p, 2, 0)
        torch.set_num_threads(2)
        with torch.backends.mkldnn.flags(enabled=False):
            b = features.extract_split(split, cnn, text, p, 2, 0)
    finally:
        torch.set_num_threads(threads)
    assert all(m.dtype == torch.float16 for m in a.levels) and a.states.dtype == torch.float16
    for x, y in zip([*a.levels, a.states, a.boxes], [*b.levels, b.states, b.boxes], strict=True):
        assert torch.equal(x, y)


def test_run_is_deterministic_and_scores_every_split(tiny):
    root, p = tiny
    a = train_and_evaluate(p, "full", 0, root / "features")
    b = train_and_evaluate(p, "full", 0, root / "features")
    assert a.metrics == b.metrics and set(a.metrics["refcoco"]) == {"val", "testA", "testB"}
    assert all(0 <= v["acc@0.5"] <= 1 for v in a.metrics["refcoco"].values())
    assert a.sigma is not None and len(a.examples) == 2 and a.examples[0]["expression"]
    assert train_and_evaluate(p, "plain", 0, root / "features").sigma is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_predict_reads_a_model_left_on_the_gpu(tiny):
    # after fit on a GPU the model stays there while the cached features are on the CPU
    from vlrepro.smcim.model import build
    from vlrepro.smcim.run import cached_config, predict

    root, p = tiny
    f = features.load_features(root / "features" / "refcoco" / "val.safetensors")
    torch.manual_seed(0)
    model = build(cached_config(p, f))
    on_cpu = predict(model, f)
    on_gpu = predict(model.cuda(), f)
    assert on_gpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)


def test_run_records_the_learning_curve_and_the_gate_control(tiny):
    root, p = tiny
    curve = p.model_copy(update={"train": p.train.model_copy(update={"steps": 4, "eval_every": 2, "cell_loss": 1.0})})
    r = train_and_evaluate(curve, "full", 0, root / "features", root / "world")
    assert [h["step"] for h in r.history if "val_acc@0.5" in h] == [2, 4]
    assert all("cell" in h for h in r.history if "loss" in h)
    # the control is the expected Acc@0.5 of a random scene object, computed on the same val expressions
    from vlrepro.baselines import heuristic_baselines
    from vlrepro.data.records import load_split

    expected = heuristic_baselines(load_split(root / "world" / "refcoco" / "val"))["random"]
    assert r.metrics["refcoco"]["val"]["random_object_acc@0.5"] == expected and 0 < expected < 1


def test_centre_cell_and_cell_loss_by_hand():
    from vlrepro.smcim.model import SMCIMOutput
    from vlrepro.smcim.run import BoxLoss, centre_cell

    boxes = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.9, 0.3, 0.1, 0.1], [0.5, 0.99, 0.2, 0.02]])
    # 4x4 grid, row-major: (col 0, row 0) = 0; (col 3, row 1) = 7; (col 2, row 3) = 14
    assert centre_cell(boxes, (4, 4)).tolist() == [0, 7, 14]
    p = SMCIMParams(self_paced={"enabled": False}, train={"cell_loss": 0.5})
    logits = torch.zeros(3, 16)
    logits[0, 0] = 2.0  # sample 0 puts extra mass on its own cell; the others are uniform
    out = SMCIMOutput(boxes.clone(), logits)
    terms = BoxLoss(p, (4, 4))(out, boxes)  # perfect boxes: L1 = GIoU loss = 0, only the cell term is left
    ce = [-(2.0 - np.log(np.exp(2.0) + 15)), np.log(16), np.log(16)]
    torch.testing.assert_close(terms["cell"], torch.tensor(np.mean(ce), dtype=torch.float32))
    torch.testing.assert_close(terms["loss"], 0.5 * terms["cell"], atol=1e-4, rtol=0)  # GIoU has an eps
    assert "cell" not in BoxLoss(SMCIMParams(self_paced={"enabled": False}), (4, 4))(out, boxes)


def test_features_dir_error_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="smcim_features"):
        train_and_evaluate(SMCIMParams(), "full", 0, Path(tmp_path))


def test_fine_tuning_trains_the_encoders_end_to_end_from_images(tiny):
    root, p = tiny
    from vlrepro.models import save_pretrained

    torch.manual_seed(0)
    cnn = CNNBackbone(CNNConfig(channels=(8, 8, 16, 16)))
    tok = train_wordpiece(train_texts(root / "world"), vocab_size=120)
    text = TextEncoder(TextConfig(vocab_size=120, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32), tok)
    save_pretrained(cnn, root / "pretrain" / "cnn")
    save_pretrained(text, root / "pretrain" / "text")
    online = p.model_copy(update={"text": "world", "train": p.train.model_copy(update={"encoder_lr": 1e-3})})
    result = train_and_evaluate(online, "full", 0, root / "unused", root / "world", root / "pretrain")
    assert set(result.metrics["refcoco"]) == {"val", "testA", "testB"} and result.examples
    assert result.history and all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    with pytest.raises(ValueError, match="data_dir and pretrain_dir"):
        train_and_evaluate(online, "full", 0, root / "unused")
    # One AdamW step over the optimiser groups moves the CNN's weights, at the encoder learning rate.
    from vlrepro.smcim.run import BoxLoss, Trainee, _online_setup

    data, _, model, groups = _online_setup(online, root / "world", root / "pretrain")
    assert [g["name"] for g in groups] == ["fusion", "encoders"] and groups[1]["lr"] == 1e-3
    before = [q.detach().clone() for q in model.cnn.parameters()]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    trainee = Trainee(model, BoxLoss(online, model.fusion.config.grid))
    trainee(data.collate([data[i] for i in range(4)]))["loss"].backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.cnn.parameters(), strict=True))


def test_visual_levels_keep_the_papers_ratio_to_the_grid():
    from vlrepro.smcim.features import level_stages

    strides = (4, 8, 16, 32)  # resnet stages
    assert level_stages(strides, 8) == [0, 1, 2]  # default profile: half, equal, double the grid stride
    assert level_stages(strides, 16) == [1, 2, 3]  # the paper: strides 8, 16, 32 around a stride-16 grid
    with pytest.raises(ValueError, match=r"strides \[2, 4, 8\].*none at \[2\]"):
        level_stages(strides, 4)
