"""BERT's masking rule and the MLM dataset."""

import pytest
import torch

from vlrepro.models.text import train_wordpiece
from vlrepro.pretrain.mlm import IGNORE, MaskedTexts, mask_tokens


def test_masking_rule_rates_and_specials():
    n, vocab, mask_id = 200_000, 50, 4
    ids = torch.randint(5, vocab, (n,))
    maskable = torch.ones(n, dtype=torch.bool)
    maskable[::10] = False  # stand-ins for [CLS]/[SEP]/[PAD]
    out, labels = mask_tokens(ids, maskable, mask_id, vocab, 0.15, torch.Generator().manual_seed(0))
    selected = labels != IGNORE
    assert not selected[~maskable].any() and torch.equal(out[~maskable], ids[~maskable])
    assert selected.float()[maskable].mean().item() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(out[~selected], ids[~selected])  # nothing outside the selection changes
    sel_out, sel_ids = out[selected], ids[selected]
    as_mask = (sel_out == mask_id).float().mean().item()
    kept = (sel_out == sel_ids).float().mean().item()  # 10% kept + random draws that hit the same id
    assert as_mask == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1 + 0.1 / vocab, abs=0.01)


def test_masked_texts_never_select_special_tokens_and_pad_labels():
    tok = train_wordpiece(["the red circle on the left", "a ring"] * 3, vocab_size=60)
    data = MaskedTexts(["the red circle on the left", "a ring"], tok, max_len=16, prob=0.9)
    specials = {tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    gen = torch.Generator().manual_seed(1)
    for row in data.rows:
        _, labels = data.mask(row, gen)
        assert all(int(t) not in specials for t in row[labels != IGNORE])
        assert labels[0] == IGNORE and labels[-1] == IGNORE  # [CLS] ... [SEP]
    batch = data.collate([data[0], data[1]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][1][batch["attention_mask"][1] == 0] == IGNORE).all()
