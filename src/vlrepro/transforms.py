"""Text side of a horizontal flip, shared by every model that flips its training images (AMC, SMCIM)."""

from __future__ import annotations

import re

_SWAP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
_LATERAL = re.compile(r"\b(" + "|".join(_SWAP) + r")\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """'the leftmost circle, left of the star' -> 'the rightmost circle, right of the star' (whole words only),
    so that an expression stays true of its mirrored image."""

    def swap(m: re.Match[str]) -> str:
        word = _SWAP[m.group(0).lower()]
        return word.capitalize() if m.group(0)[0].isupper() else word

    return _LATERAL.sub(swap, text)
