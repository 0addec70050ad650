"""ALBEF's released checkpoint layout loaded into vlrepro's ALBEF: a tiny checkpoint in that layout, written
from timm's ViT and transformers' BERT (with cross-attention in the fusion layers, as ALBEF's), must give the
same image tokens, text tokens and fusion outputs as those reference modules."""

from __future__ import annotations

import pytest
import timm
import torch
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from vlrepro.amc.config import AMCParams
from vlrepro.amc.model import extended_mask
from vlrepro.amc.pretrain import build_start
from vlrepro.amc.release import MEAN, STD, albef_from_release
from vlrepro.amc.run import build_model
from vlrepro.models import save_pretrained
from vlrepro.models.text import encode, train_wordpiece

TEXT_LAYERS, FUSION_LAYERS, WIDTH = 3, 2, 128  # two 64-wide heads (ALBEF's widths / 64); not the default split


def _prefixed(prefix: str, module: torch.nn.Module, scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.clone() * scale for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """``(path of ALBEF.pth, tokenizer folder, the reference ViT, the reference BERT)``."""
    root = tmp_path_factory.mktemp("albef")
    tok = train_wordpiece(["a red circle on the left", "two blue squares", "the green star"] * 4, vocab_size=60)
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", img_size=32, patch_size=8, embed_dim=WIDTH, depth=2, num_heads=2,
                            mlp_ratio=2.0, num_classes=0).eval()  # fmt: skip
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=WIDTH, num_hidden_layers=TEXT_LAYERS + FUSION_LAYERS,
                     num_attention_heads=2, intermediate_size=256, max_position_embeddings=64, is_decoder=True,
                     add_cross_attention=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    for layer in bert.encoder.layer:  # transformers' cross-attention needs a decoder; ALBEF's self-attention is
        layer.attention.self.is_causal = False  # bidirectional
    text_only = {f"encoder.layer.{i}.crossattention" for i in range(TEXT_LAYERS)}  # ALBEF's text layers have none
    bert_state = {k: v for k, v in _prefixed("bert", bert).items()
                  if not any(k.startswith(f"bert.{t}") for t in text_only)}  # fmt: skip
    head = BertOnlyMLMHead(cfg)
    head.predictions.decoder.weight = bert.embeddings.word_embeddings.weight  # tied, as in ALBEF
    state = {**_prefixed("visual_encoder", vit), **{f"text_encoder.{k}": v for k, v in bert_state.items()},
             **_prefixed("text_encoder.cls", head)}  # fmt: skip
    # the momentum copies differ from the online ones, so that a key mapped to the wrong copy shows
    state |= {k.replace("visual_encoder.", "visual_encoder_m.", 1): v * 0.5 for k, v in state.items()
              if k.startswith("visual_encoder.")}  # fmt: skip
    state |= {k.replace("text_encoder.", "text_encoder_m.", 1): v * 0.5 for k, v in state.items()
              if k.startswith("text_encoder.")}  # fmt: skip
    for name in ("vision_proj", "text_proj"):
        lin = torch.nn.Linear(WIDTH, 16)
        state |= _prefixed(name, lin) | _prefixed(f"{name}_m", lin, 0.5)
    state |= _prefixed("itm_head", torch.nn.Linear(WIDTH, 2))
    state |= {"temp": torch.tensor(0.05), "image_queue": torch.randn(16, 8), "text_queue": torch.randn(16, 8),
              "queue_ptr": torch.zeros(1, dtype=torch.long),
              "text_encoder.bert.embeddings.position_ids": torch.arange(64)[None]}  # fmt: skip
    path = root / "ALBEF.pth"
    torch.save({"model": state, "epoch": 29, "config": {"embed_dim": 16}}, path)
    return path, root, vit, bert, state


def test_the_release_gives_the_reference_modules_outputs(release):
    path, tok_dir, vit, bert, state = release
    model = albef_from_release(path, tok_dir, vision_trainable_blocks=None)
    cfg = model.config
    assert (cfg.text_layers, cfg.fusion_layers, cfg.embed_dim, cfg.vision.img_size) == (3, 2, 16, 32) and cfg.proj_bias
    assert cfg.vision.num_heads == 2 and cfg.text.num_heads == 2 and cfg.text.dropout == 0.1
    images = torch.rand(2, 3, 32, 32)
    normalised = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model.encode_image(images)
        torch.testing.assert_close(tokens, vit.forward_features(normalised))
        enc = encode(model.text.tokenizer, ["a red circle", "two blue squares on the left"], 12)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        ext = extended_mask(mask, torch.float32)
        hidden = bert.embeddings(input_ids=ids)
        for layer in bert.encoder.layer[:TEXT_LAYERS]:
            hidden = layer(hidden, attention_mask=ext)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        text = model.encode_text(ids, mask)
        torch.testing.assert_close(text, hidden)
        for j, layer in enumerate(bert.encoder.layer[TEXT_LAYERS:]):
            expected = layer(hidden, attention_mask=ext, encoder_hidden_states=tokens)
            expected = expected[0] if isinstance(expected, tuple) else expected
            torch.testing.assert_close(model.fusion[j](hidden, ext, tokens), expected)
            hidden = expected
    torch.testing.assert_close(model.image_proj.bias, state["vision_proj.bias"])
    torch.testing.assert_close(model.logit_scale(), torch.tensor(20.0))  # 1 / temp
    torch.testing.assert_close(model.momentum["visual"].body.pos_embed, state["visual_encoder_m.pos_embed"])
    torch.testing.assert_close(model.momentum["text_proj"].weight, state["text_proj_m.weight"])
    torch.testing.assert_close(model.momentum["text"].bert.encoder.layer[2].output.dense.weight,
                               state["text_encoder_m.bert.encoder.layer.2.output.dense.weight"])  # fmt: skip
    torch.testing.assert_close(model.text.mlm_head.predictions.transform.dense.weight,
                               state["text_encoder.cls.predictions.transform.dense.weight"])  # fmt: skip


def test_the_pretrain_phase_starts_from_the_release_and_the_runs_read_it(release, tmp_path):
    path, tok_dir, _, _, state = release
    weights = {"weights": path, "tokenizer": tok_dir / "tokenizer.json"}
    with pytest.raises(ValueError, match=r"release has \{'text_layers': 3\}, the amc section says \{'text_lay"):
        build_start(AMCParams(pretrain=weights, text_pooling="cls"), tok_dir, seed=0)
    params = AMCParams(pretrain=weights, text_layers=3, text_pooling="cls", vision_trainable_blocks=1)
    model = build_start(params, tok_dir, seed=0)  # the CLIP checkpoints are not read
    assert model.frozen_blocks == 1 and model.config.momentum == params.momentum
    torch.testing.assert_close(model.itm_head.weight, state["itm_head.weight"])
    save_pretrained(model, tmp_path / "albef")  # what amc_pretrain writes; an AMC run starts from it
    run_model = build_model(params, tmp_path / "albef")
    torch.testing.assert_close(run_model.image_proj.bias, state["vision_proj.bias"])


def test_a_broken_release_names_what_is_wrong(release, tmp_path):
    path, tok_dir, _, _, state = release
    with pytest.raises(FileNotFoundError, match=r"amc\.pretrain\.weights"):
        albef_from_release(tmp_path / "nowhere.pth", tok_dir)
    torch.save({"model": {**state, "itm_head_v2.weight": torch.zeros(2)}}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"'itm_head_v2\.weight' has no counterpart"):
        albef_from_release(tmp_path / "extra.pth", tok_dir)
    torch.save({"model": {k: v for k, v in state.items() if k != "text_encoder.bert.encoder.layer.3.crossattention."
                          "self.query.weight"}}, tmp_path / "short.pth")  # fmt: skip
    with pytest.raises(ValueError, match=r"does not fill 1 parameters: \['fusion\.0\.crossattention\.query\.weight'\]"):
        albef_from_release(tmp_path / "short.pth", tok_dir)
    torch.save({"model": {**state, "temp": torch.tensor(0.005)}}, tmp_path / "cold.pth")
    with pytest.raises(ValueError, match=r"temperature 0\.005 is below 1/100"):
        albef_from_release(tmp_path / "cold.pth", tok_dir)
    untied = {**state, "text_encoder.cls.predictions.decoder.weight": torch.zeros_like(
        state["text_encoder.bert.embeddings.word_embeddings.weight"])}  # fmt: skip
    torch.save({"model": untied}, tmp_path / "untied.pth")
    with pytest.raises(ValueError, match="MLM decoder is not tied"):
        albef_from_release(tmp_path / "untied.pth", tok_dir)
    other = train_wordpiece(["completely different words here"] * 4, vocab_size=40)
    other.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"tokenizer of \d+ tokens for a BERT of \d+"):
        albef_from_release(path, tmp_path)
