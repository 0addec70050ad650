"""GLIP prompts: class spans, the token-level positive map of multi-token names, the token budget."""

import numpy as np
import pytest
import torch

from vlrepro.glip.prompts import class_scores, join_classes, positive_map, prompt_tokens, training_prompt
from vlrepro.models.text import train_wordpiece

NAMES = ["circle", "checkered heart", "arrow", "semicircle", "dotted star"]


@pytest.fixture(scope="module")
def tok():
    texts = ["circle. arrow. heart. star.", "a semicircle and a circle", "checkered heart. dotted star."]
    return train_wordpiece(texts, vocab_size=70)


def test_join_classes_spans_name_each_class():
    p = join_classes(NAMES, [1, 0, 4])
    assert p.text == "checkered heart. circle. dotted star."
    assert [p.text[a:b] for a, b in p.spans] == ["checkered heart", "circle", "dotted star"] and p.classes == (1, 0, 4)


def test_positive_map_covers_every_token_of_a_multi_token_name(tok):
    p = join_classes(NAMES, [1, 0, 2])
    m = positive_map(tok, p, max_len=12)
    tokens = tok.encode(p.text).tokens  # [CLS] checkered heart . circle . arrow . [SEP]
    assert tokens[:8] == ["[CLS]", "checkered", "heart", ".", "circle", ".", "arrow", "."]
    want = torch.zeros(3, 12, dtype=torch.bool)
    want[0, [1, 2]] = True  # "checkered heart": both tokens
    want[1, 4] = True
    want[2, 6] = True  # separators, [CLS], [SEP] and padding belong to no class
    assert torch.equal(m, want)
    assert torch.equal(positive_map(tok, p, max_len=3), want[:, :3])  # cut at max_len
    # a class's score is the mean probability over its tokens
    probs = torch.tensor([[0.0, 0.2, 0.6, 0.9, 0.5, 0.9, 0.1, 0.9, 0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(class_scores(probs, m), torch.tensor([[0.4, 0.5, 0.1]]))


def test_training_prompt_keeps_positives_and_fits_the_budget(tok):
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(50):
        p = training_prompt(NAMES, [3, 0], rng, tok, max_tokens=64)
        assert {0, 3} <= set(p.classes) and len(set(p.classes)) == len(p.classes)
        sizes.add(len(p.classes))
    assert sizes == {3, 4, 5}  # 1 to all 3 negatives
    # base classes only as negatives (novel ones never appear in a training prompt)
    p = training_prompt(NAMES, [0], np.random.default_rng(1), tok, max_tokens=64, candidates=[0, 1, 2])
    assert set(p.classes) <= {0, 1, 2}
    # a tight budget drops negatives first, never the present classes
    tight = prompt_tokens(tok, join_classes(NAMES, [3, 0]).text)
    for seed in range(10):
        p = training_prompt(NAMES, [3, 0], np.random.default_rng(seed), tok, max_tokens=tight)
        assert sorted(p.classes) == [0, 3] and prompt_tokens(tok, p.text) <= tight
    with pytest.raises(ValueError, match="alone exceeds the prompt budget"):
        training_prompt(NAMES, [1], rng, tok, max_tokens=3)
