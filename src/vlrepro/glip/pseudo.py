"""GLIP's self-training data: world captions whose noun phrases a teacher GLIP has boxed.

GLIP runs a language parser over web captions and lets a teacher (GLIP-T(C)) ground every noun phrase; the
confident boxes become the student's grounding data. Here the parser is a shallow chunker over the world's
lexicon (``noun_phrases``: modifiers — count, size, colour, pattern words — up to a shape noun), and a
phrase keeps the teacher's boxes scoring at least ``threshold`` after NMS; a caption without any such box is
dropped.
"""

from __future__ import annotations

import re
from dataclasses import replace

from tokenizers import Tokenizer
from torchvision.ops import nms

from vlrepro.data.records import Phrase, Record, Split
from vlrepro.data.world import vocab
from vlrepro.glip.evaluate import phrase_boxes
from vlrepro.glip.model import GLIP

_WORD = re.compile(r"[a-z-]+")
_MODIFIERS = ("number", "size", "colour", "pattern")
_HEADS = ("category", "categories")


def noun_phrases(text: str) -> list[tuple[int, int]]:
    """Character spans of the shape noun phrases of ``text`` ("two solid pink hearts"): modifier words up to
    a shape noun; "shapes", "one" and background words name nothing that can be boxed."""
    spans, start = [], None
    for m in _WORD.finditer(text.lower()):
        kind = vocab.WORDS.get(m.group(), (None, None))[0]
        if kind in _MODIFIERS:
            start = m.start() if start is None else start
        elif kind in _HEADS:
            spans.append((m.start() if start is None else start, m.end()))
            start = None
        else:
            start = None
    return spans


def _caption_phrases(record: Record) -> list[tuple[int, int]]:
    return noun_phrases(record.text)


def pseudo_label(
    teacher: GLIP, captions: Split, tokenizer: Tokenizer, max_len: int, threshold: float, nms_iou: float = 0.5
) -> Split:
    """``captions`` (one caption per image is enough) as a grounding split: every noun phrase with the
    teacher's boxes above ``threshold``; phrases without one are left out, captions without any dropped."""
    records = [r for r in captions.records if noun_phrases(r.text)]
    out: list[Record] = []
    for r, boxes, scores in phrase_boxes(teacher, captions, records, _caption_phrases, tokenizer, max_len):
        kept_boxes: list[tuple[float, ...]] = []
        phrases = []
        for j, (a, b) in enumerate(noun_phrases(r.text)):
            keep = nms(boxes, scores[:, j], nms_iou)
            keep = keep[scores[keep, j] >= threshold]
            if len(keep):
                ids = tuple(range(len(kept_boxes), len(kept_boxes) + len(keep)))
                kept_boxes += [tuple(v) for v in boxes[keep].tolist()]
                phrases.append(Phrase(a, b, ids))
        if phrases:
            out.append(replace(r, boxes=tuple(kept_boxes), labels=(-1,) * len(kept_boxes), phrases=tuple(phrases),
                               mask_ids=()))  # fmt: skip
    return replace(captions, records=out)
