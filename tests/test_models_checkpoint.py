"""save_pretrained / load_pretrained: every model kind comes back identical from its folder alone."""

import json

import pytest
import torch

from vlrepro.models import config_from_dict, load_pretrained, save_pretrained
from vlrepro.models.backbones import CNNBackbone, CNNConfig, ViTBackbone, ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.rec import RECConfig, RECModel
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece

CNN = CNNConfig(channels=(8, 16, 24, 32))
VIT = ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
TEXT = TextConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(["a red circle", "a blue square on the left"] * 4, vocab_size=64)


def outputs(model, images, batch):
    with torch.no_grad():
        if isinstance(model, CNNBackbone):
            return model(images)
        if isinstance(model, ViTBackbone):
            return [model(images)]
        if isinstance(model, TextEncoder):
            hidden = model(**batch)
            return [hidden, model.mlm_logits(hidden)]
        if isinstance(model, DualEncoder):
            return list(model(images, **batch))
        return [model(images, **batch).boxes]


@pytest.mark.parametrize("kind", ["cnn", "vit", "text", "clip", "rec"])
def test_round_trip_gives_identical_outputs(tmp_path, tokenizer, kind):
    torch.manual_seed(0)
    nolm = TextConfig(**{**TEXT.__dict__, "mlm_head": False})
    model = {
        "cnn": lambda: CNNBackbone(CNN),
        "vit": lambda: ViTBackbone(VIT),
        "text": lambda: TextEncoder(TEXT, tokenizer),
        "clip": lambda: DualEncoder(CLIPConfig(vision=VIT, text=nolm, embed_dim=16), tokenizer),
        "rec": lambda: RECModel(RECConfig(cnn=CNN, text=nolm, dim=32, num_heads=2), tokenizer),
    }[kind]().eval()
    size = 32 if kind in ("vit", "clip") else 64
    images, batch = torch.rand(2, 3, size, size), tokenizer.encode_batch(["a red circle", "a blue square"])
    batch = {"input_ids": torch.tensor([e.ids for e in batch]),
             "attention_mask": torch.tensor([e.attention_mask for e in batch])}
    save_pretrained(model, tmp_path / kind)
    doc = json.loads((tmp_path / kind / "config.json").read_text())
    assert doc["kind"] == kind and "module" not in doc  # the built-in kinds keep the format the pretrain stage wrote
    assert (tmp_path / kind / "tokenizer.json").is_file() == (kind in ("text", "clip", "rec"))
    loaded = load_pretrained(tmp_path / kind)
    assert type(loaded) is type(model) and not loaded.training
    for a, b in zip(outputs(model, images, batch), outputs(loaded, images, batch), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_forgets_the_weights_path_it_started_from(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet10t", channels=(8, 16, 24, 32))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = CNNBackbone(CNNConfig(channels=(8, 16, 24, 32), weights=str(tmp_path / "w.safetensors")))
    save_pretrained(model, tmp_path / "ckpt")
    (tmp_path / "w.safetensors").unlink()  # the checkpoint must not need the original file any more
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["config"]["weights"] is None
    assert torch.equal(load_pretrained(tmp_path / "ckpt").body.conv1[0].weight, src.conv1[0].weight)


def test_config_from_dict_rebuilds_nested_configs_and_rejects_unknown_keys():
    cfg = CLIPConfig(vision=VIT, text=TEXT, embed_dim=8)
    import dataclasses

    assert config_from_dict(CLIPConfig, json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        config_from_dict(CNNConfig, {"arch": "resnet10t", "depth": 3})


def test_loading_an_empty_folder_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain"):
        load_pretrained(tmp_path)


def test_a_text_model_without_tokenizer_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        save_pretrained(TextEncoder(TEXT), tmp_path)
