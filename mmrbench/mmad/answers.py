"""Model text -> option letters, for one question or a numbered list of them.

Rules (protocol ``mmad-v1``), applied in this order:

1. the explicit form ``Answer: X`` (any case for the word, optional ``**``, brackets or a full-width
   colon) — for a list, ``k. Answer: X`` lines are matched to question k by their number;
2. otherwise a standalone capital letter (a word of its own, e.g. ``B``, ``(B)``, ``B. No``).

Only letters that are options of the question count. For a single question the last match of the
first rule that matches is taken (MMAD's scripts take the last letter too: a model that restates the
options before answering ends with its choice). For a list of n questions a rule applies only when it
yields exactly n letters (or a numbered answer for the question); anything else leaves the question
unparsed (``None``) rather than guessing an alignment.

All patterns are flat (no nested repetition), so parsing is linear in the length of the text; model
text is never evaluated.
"""
from __future__ import annotations

import re
from typing import Sequence

_EXPLICIT = re.compile(r"(?i:answer)\s{0,8}(?:is)?\s{0,8}[:：]?\s{0,8}\**\s{0,8}[(\[]?([A-E])(?![A-Za-z0-9])")
_NUMBERED = re.compile(r"(?m)^[ \t>*#-]{0,8}(?:(?i:question)\s{0,4})?(\d{1,3})\s{0,4}[.:)]\s{0,8}\**\s{0,4}"
                       r"(?i:answer)\s{0,8}[:：]?\s{0,8}\**\s{0,8}[(\[]?([A-E])(?![A-Za-z0-9])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-E])(?![A-Za-z0-9'])")


def _filter(found: list[str], allowed: Sequence[str] | None) -> list[str]:
    return found if allowed is None else [x for x in found if x in allowed]


def parse_letter(text: str | None, allowed: Sequence[str] | None = None) -> str | None:
    """The chosen letter of an answer to one question, or ``None`` when there is none."""
    if not text:
        return None
    for pat in (_EXPLICIT, _STANDALONE):
        found = _filter([m.group(1) for m in pat.finditer(text)], allowed)
        if found:
            return found[-1]
    return None


def parse_letters(text: str | None, allowed: Sequence[Sequence[str] | None]) -> list[str | None]:
    """Letters for a list of ``len(allowed)`` questions answered in one text (``allowed[k]`` = the
    option letters of question k, or ``None`` for any of A-E)."""
    n = len(allowed)
    if n == 1:
        return [parse_letter(text, allowed[0])]
    out: list[str | None] = [None] * n
    if not text:
        return out
    numbered = [(int(m.group(1)), m.group(2)) for m in _NUMBERED.finditer(text)]
    if numbered:
        for k, letter in numbered:  # a later line for the same number wins
            if 1 <= k <= n and ((a := allowed[k - 1]) is None or letter in a):
                out[k - 1] = letter
        if any(x is not None for x in out):
            return out
    for pat in (_EXPLICIT, _STANDALONE):
        found = [m.group(1) for m in pat.finditer(text)]
        if len(found) == n:
            return [x if (a is None or x in a) else None for x, a in zip(found, allowed)]
    return out
