"""GLIP's detection prompts: the class list as one text ("circle. arrow. heart."), and which of its tokens
belong to which class.

Training prompts hold every class present in the image plus sampled negatives (half the time all the other
classes, else a uniform number of them), in random order, cut to a token budget by dropping negatives
first. A box of class c is a positive target for *every* sub-word token of c's name (``positive_map``);
at inference a class's score is the mean sigmoid over those tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

SEPARATOR = ". "


@dataclass(frozen=True)
class Prompt:
    text: str
    classes: tuple[int, ...]  # class ids in prompt order
    spans: tuple[tuple[int, int], ...]  # character span of each class name in ``text``


def join_classes(names: Sequence[str], classes: Sequence[int]) -> Prompt:
    """``"name0. name1."``: the names of ``classes`` in that order, with each name's character span."""
    parts, spans, at = [], [], 0
    for c in classes:
        spans.append((at, at + len(names[c])))
        parts.append(names[c])
        at += len(names[c]) + len(SEPARATOR)
    return Prompt(SEPARATOR.join(parts) + ".", tuple(classes), tuple(spans))


def prompt_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Tokens of ``text`` as the text encoder sees them ([CLS] and [SEP] included), before any truncation."""
    if tokenizer.truncation is None:
        return len(tokenizer.encode(text).ids)
    untruncated = Tokenizer.from_str(tokenizer.to_str())
    untruncated.no_truncation()
    return len(untruncated.encode(text).ids)


def training_prompt(
    names: Sequence[str],
    present: Sequence[int],
    rng: np.random.Generator,
    tokenizer: Tokenizer,
    max_tokens: int,
    candidates: Sequence[int] | None = None,
) -> Prompt:
    """The classes ``present`` in an image plus negatives drawn from ``candidates`` (default: every class;
    a detector trained on base classes passes those), shuffled, within ``max_tokens``."""
    pool = [c for c in (range(len(names)) if candidates is None else candidates) if c not in set(present)]
    if pool:
        k = len(pool) if rng.random() < 0.5 else int(rng.integers(1, len(pool) + 1))
        negatives = [pool[i] for i in rng.permutation(len(pool))[:k]]
    else:
        negatives = []
    positives = list(dict.fromkeys(present))
    while True:
        chosen = positives + negatives
        order = [chosen[i] for i in rng.permutation(len(chosen))]
        prompt = join_classes(names, order)
        if prompt_tokens(tokenizer, prompt.text) <= max_tokens:
            return prompt
        if negatives:
            negatives.pop()
        elif len(positives) > 1:
            positives.pop()
        else:
            raise ValueError(f"class name {names[positives[0]]!r} alone exceeds the prompt budget of {max_tokens} "
                             "tokens (glip.max_prompt_tokens)")


def positive_map(tokenizer: Tokenizer, prompt: Prompt, max_len: int) -> Tensor:
    """``(len(prompt.classes), max_len)`` bool: token j of the encoded prompt lies inside class i's name.
    Special tokens ([CLS], [SEP], padding) belong to no class."""
    return span_map(tokenizer, prompt.text, [[span] for span in prompt.spans], max_len)


def span_map(tokenizer: Tokenizer, text: str, spans: Sequence[Sequence[tuple[int, int]]], max_len: int) -> Tensor:
    """``(len(spans), max_len)`` bool: token j of the encoded ``text`` lies inside one of the character spans
    of entry i (a class name of a prompt, or the phrases of a caption that name box i)."""
    enc = tokenizer.encode(text)
    out = torch.zeros(len(spans), max_len, dtype=torch.bool)
    for j, ((start, end), special) in enumerate(zip(enc.offsets, enc.special_tokens_mask, strict=True)):
        if j >= max_len or special or start == end:
            continue
        for i, entry in enumerate(spans):
            if any(start >= a and end <= b for a, b in entry):
                out[i, j] = True
    return out


def class_scores(token_probs: Tensor, class_map: Tensor) -> Tensor:
    """``(..., L)`` token probabilities -> ``(..., C)``: per class, the mean over its tokens (``class_map``
    (C, L) from ``positive_map``)."""
    weights = class_map.to(token_probs.dtype)
    return token_probs @ weights.T / weights.sum(1).clamp(min=1)
