"""Leak check: a reasoning text must read as if the model found the anomaly itself.

Texts are generated with the answer in the prompt (red boxes drawn on the query image, coordinates
and labels in the text). A text that says "the red box shows ..." or "according to the hint ..."
teaches the policy to expect a hint it will never get at test time, so such texts are rejected.

The patterns are phrases, not single words: "red" alone is legitimate (a cable has a red
conductor), "marked" alone is legitimate ("a marked discoloration"). What is flagged is the
vocabulary of the hint itself: red boxes/rectangles/outlines, hint, given/provided coordinates,
ground truth, annotations, and references to the prompt or instructions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS: list[tuple[str, str]] = [
    ("red box", r"\bred[\s-]+(?:bounding[\s-]+)?(?:box(?:es|ed)?|rectangles?|outlines?|frames?|borders?|squares?"
                r"|markings?|marks?|markers?|annotations?|overlays?|highlights?)\b"),
    ("in red", r"\b(?:marked|highlighted|outlined|annotated|boxed|circled|framed|drawn|indicated|enclosed)\s+"
               r"(?:in|with|by)\s+(?:a\s+|the\s+)?red\b"),
    # "a hint of rust" and "the texture hinted at a crack" are ordinary English, not the hint
    ("hint", r"\bhints?\b(?!\s+of\b)|\b(?:as|was|were|is)\s+hinted\b"),
    ("given coordinates", r"\b(?:given|provided|supplied|specified|prescribed)\s+"
                          r"(?:bounding[\s-]+)?(?:coordinates?|bbox(?:es)?|box(?:es)?|regions?|locations?|"
                          r"positions?|labels?|annotations?|answers?)\b"),
    ("coordinates given", r"\b(?:coordinates?|bbox(?:es)?|bounding boxes|annotations?)\s+(?:that\s+)?(?:were\s+|was\s+|are\s+|is\s+)?"
                          r"(?:given|provided|supplied|specified)\b"),
    ("ground truth", r"\bground[\s-]*truth\b"),
    ("annotation", r"\b(?:the|an|this|these)\s+annotat(?:ion|ions|ed)\b"),
    ("marked region", r"\b(?:marked|highlighted|annotated|boxed|pre-?marked)\s+(?:regions?|areas?|boxes|box|locations?|spots?|zones?)\b"),
    ("the prompt", r"\b(?:the|my)\s+(?:prompt|instructions?|task\s+description)\s+(?:says|said|states|stated|indicates|"
                   r"indicated|mentions|mentioned|tells|told|notes|noted|specifies|specified)\b"),
    ("i was told", r"\b(?:i|we)\s+(?:was|were|am|are|have\s+been|had\s+been)\s+(?:told|informed|given)\b"),
    ("as stated", r"\bas\s+(?:stated|indicated|specified|given|mentioned|noted)\s+(?:in|by)\s+(?:the\s+)?"
                  r"(?:prompt|question|instructions?|task|hint)\b"),
]

_COMPILED = [(name, re.compile(rx, re.I)) for name, rx in _PATTERNS]


@dataclass(frozen=True)
class Leak:
    """One place where a text mentions the hint: the rule's name and the matched words."""

    rule: str
    text: str
    start: int


def find_leaks(text: str | None) -> list[Leak]:
    """Every mention of the hint in ``text``, in order of position."""
    if not text:
        return []
    out = [Leak(name, m.group(0), m.start()) for name, rx in _COMPILED for m in rx.finditer(text)]
    return sorted(out, key=lambda lk: lk.start)


def leaks_hint(text: str | None) -> bool:
    return bool(find_leaks(text))
