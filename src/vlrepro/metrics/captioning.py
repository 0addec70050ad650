"""Captioning scores: corpus BLEU-4 and CIDEr-D with the COCO caption evaluation's scorers (pycocoevalcap).

The COCO toolkit tokenises with the Stanford PTB tokenizer (Java); ``tokenize`` does what it does to plain
English captions without Java: lower case, punctuation dropped, split on whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def caption_scores(references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]) -> dict[str, float]:
    """``{"bleu4", "cider"}`` of one candidate per image against its references (same keys in both)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if set(references) != set(candidates) or not candidates:
        raise ValueError(f"captioning scores need the same non-empty image keys in references and candidates; "
                         f"got {len(references)} and {len(candidates)} keys, {len(set(references) ^ set(candidates))} "
                         "not in both")  # fmt: skip
    if empty := [k for k, refs in references.items() if not refs]:
        raise ValueError(f"images without a reference caption: {empty[:5]}")
    gts = {k: [tokenize(r) for r in refs] for k, refs in references.items()}
    res = {k: [tokenize(c)] for k, c in candidates.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}
