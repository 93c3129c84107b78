"""Expert prefixes: which leading part of a reference solution a guided sample starts from."""

from __future__ import annotations

import math
from typing import Sequence

PARAGRAPH_BREAK = "\n\n"


def cut_index(n_tokens: int, ratio: float, break_ends: Sequence[int] = (), snap_window: float = 0.3) -> int:
    """Number of solution tokens in a prefix of ratio `ratio`.

    The cut lies at floor(ratio * n); it snaps forward to the first paragraph break ending at or after it
    if that break ends before (ratio + snap_window) * n. `break_ends` are token positions just after each
    "\\n\\n". Ratio 0 gives no prefix, ratio >= 1 the whole solution.
    """
    if not 0.0 <= ratio:
        raise ValueError(f"prefix ratio must be >= 0, got {ratio}")
    if ratio == 0 or n_tokens == 0:
        return 0
    if ratio >= 1:
        return n_tokens
    base = math.floor(ratio * n_tokens)
    limit = (ratio + snap_window) * n_tokens
    for end in sorted(break_ends):
        if end >= base:
            return end if end < limit else base
    return base


def break_ends_from_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Token positions just after each paragraph break, from a tokenizer's character offsets.

    A break's end falls inside or at the end of some token t: the cut goes after t (position t + 1).
    """
    ends, pos = [], text.find(PARAGRAPH_BREAK)
    char_ends = []
    while pos >= 0:
        char_ends.append(pos + len(PARAGRAPH_BREAK))
        pos = text.find(PARAGRAPH_BREAK, pos + len(PARAGRAPH_BREAK))
    t = 0
    for c in char_ends:
        while t < len(offsets) and offsets[t][1] < c:
            t += 1
        if t < len(offsets):
            ends.append(t + 1)
    return sorted(set(ends))
