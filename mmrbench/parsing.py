"""Reading a model's answer: the Yes/No decision and the boxes, as protocol ``mmr-ad-v1`` defines.

Model text is untrusted input, so nothing here evaluates it: boxes are found with bounded regular
expressions over the answer, which also tolerates the half-broken forms real models write
(missing tags, ``Yes{...}``, Python-literal dicts, curly quotes, code fences, bare number lists).
Coordinates are returned as written, in the model's own convention; :mod:`mmrbench.coords` maps them.

Hostile answers cost little: the parse is linear in the length of the text (no pattern rescans an
unbounded stretch from every position), reads at most ``MAX_RESPONSE_CHARS`` characters, and never
recurses, so deeply nested brackets cannot raise RecursionError.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Longest answer part we look at (after the ``<answer>``/``<think>`` split); beyond it a reply is
#: garbage. Part of protocol ``mmr-ad-v1`` (docs/protocol.md), so it never changes within a version.
MAX_ANSWER_CHARS = 65536
#: Longest response we read at all: characters after this one are ignored, whatever they hold.
MAX_RESPONSE_CHARS = 2 * MAX_ANSWER_CHARS

# Every pattern below runs in time linear in the text it scans (benchmarks/parsing_worst_case.py
# measures it). A lazy ``.*?`` that can fail at every start (``<think>.*?</think>`` on a reply of
# unclosed ``<think>`` tags) is quadratic in Python's backtracking engine, so the reasoning blocks
# are cut with single-tag searches instead.
_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_THINK_TAG_RE = re.compile(r"<think>", re.I)
_THINK_END_RE = re.compile(r"</think>", re.I)
_DECISION_RE = re.compile(r"(?<![A-Za-z0-9_])(yes|no)(?![A-Za-z0-9_])", re.I)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_RE = re.compile(
    rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]"
)
_KEY_BEFORE_RE = re.compile(r"""["']?([A-Za-z_][A-Za-z0-9_]*)["']?\s*[:=]\s*\[?\s*$""")
_QUOTES_OPEN = "\"'\u201c\u201d\u2018\u2019`"
_LABEL_RE = re.compile(
    rf"""["'\u2018\u2019\u201c\u201d]?(?:label|anomaly_type|type|category)["'\u2018\u2019\u201c\u201d]?\s*:\s*[{_QUOTES_OPEN}]([^\n{_QUOTES_OPEN}]{{0,200}})[{_QUOTES_OPEN}]""",
    re.I,
)
_LABEL_SPAN_RE = re.compile(
    rf"""(?:label|anomaly_type|description)["'\u2018\u2019\u201c\u201d]?\s*:\s*[{_QUOTES_OPEN}][^\n{_QUOTES_OPEN}]{{0,200}}[{_QUOTES_OPEN}]""",
    re.I,
)
BOX_KEYS = ("bbox_2d", "box_2d", "bbox", "box", "boxes", "bboxes", "coordinates", "bounding_box")


@dataclass(frozen=True)
class RawBox:
    """A box as the model wrote it: four numbers in the model's convention, its label and key."""

    coords: tuple[float, float, float, float]
    label: str = ""
    key: str = ""


@dataclass
class ParsedAnswer:
    """What the scorer needs from one response.

    ``decision`` is True (anomalous), False (normal) or None (no readable answer: invalid).
    ``boxes`` holds the answer's boxes only when the decision is Yes.
    """

    decision: bool | None
    boxes: list[RawBox] = field(default_factory=list)
    answer_text: str = ""
    had_answer_tag: bool = False

    @property
    def valid(self) -> bool:
        return self.decision is not None


def extract_answer(text: str) -> tuple[str, bool]:
    """The part of a response that counts: the first ``<answer>`` block, else the text after any
    reasoning block. A ``<think>`` that mentions coordinates never contributes boxes."""
    m = _ANSWER_RE.search(text)
    if m:
        return m.group(1), True
    return _strip_think(text), False


def _strip_think(text: str) -> str:
    """Each ``<think>...</think>`` block becomes one space, and an unclosed ``<think>`` (a truncated
    reply) one space up to the end: a reasoning block never holds the answer.

    Same result as ``re.sub(r"<think>.*?</think>", " ")`` followed by ``re.sub(r"<think>.*", " ")``
    (flags S, I), but each character is scanned a bounded number of times: once a ``<think>`` has no
    ``</think>`` after it, no later one has either, so the scan stops there.
    """
    parts: list[str] = []
    pos = 0
    while True:
        start = _THINK_TAG_RE.search(text, pos)
        if start is None:
            break
        end = _THINK_END_RE.search(text, start.end())
        if end is None:
            break
        parts.append(text[pos:start.start()])
        parts.append(" ")
        pos = end.end()
    parts.append(text[pos:])
    rest = "".join(parts)
    # The pieces joined by " " hold no tag of their own, so the first unclosed tag is in the tail.
    unclosed = _THINK_TAG_RE.search(rest)
    if unclosed is not None:
        rest = rest[:unclosed.start()] + " "
    return rest


def _normalise(text: str) -> str:
    # Fences and full-width punctuation are decoration; boxes and words survive without them.
    text = text.replace("```json", " ").replace("```python", " ").replace("```", " ")
    return text.replace("\uff0c", ",").replace("\uff1a", ":").replace("\uff3b", "[").replace("\uff3d", "]")


def find_decision(answer: str) -> bool | None:
    """First standalone Yes/No word, ignoring words inside label strings ('no solder')."""
    masked = _LABEL_SPAN_RE.sub(lambda m: " " * len(m.group(0)), answer)
    m = _DECISION_RE.search(masked)
    if not m:
        return None
    return m.group(1).lower() == "yes"


def find_boxes(answer: str) -> list[RawBox]:
    """Every 4-number list in the answer, with the key it was given and the nearest label after it."""
    out: list[RawBox] = []
    matches = list(_BOX_RE.finditer(answer))
    for i, m in enumerate(matches):
        try:
            coords = tuple(float(g) for g in m.groups())
        except ValueError:  # pragma: no cover - the regex admits only numbers
            continue
        if not all(abs(c) < 1e7 for c in coords):
            continue
        before = answer[max(0, m.start() - 40): m.start()]
        km = _KEY_BEFORE_RE.search(before)
        key = km.group(1).lower() if km else ""
        if key and key not in BOX_KEYS and key not in ("label",):
            # a list under some other key (e.g. 'point', 'size') is not a box
            if not key.endswith("box") and not key.endswith("bbox"):
                continue
        # The label belongs to this box if it appears before the next box (same dict, usually after).
        end = matches[i + 1].start() if i + 1 < len(matches) else min(len(answer), m.end() + 300)
        lm = _LABEL_RE.search(answer, m.end(), end)
        if lm is None:
            # label written before the box in the same dict: {'label': 'x', 'bbox_2d': [...]}
            start = matches[i - 1].end() if i > 0 else max(0, m.start() - 300)
            lms = list(_LABEL_RE.finditer(answer, start, m.start()))
            lm = lms[-1] if lms else None
        label = lm.group(1).strip() if lm else ""
        out.append(RawBox(coords, label, key))  # type: ignore[arg-type]
    return out


def parse_answer(text: str | None) -> ParsedAnswer:
    """Decision and boxes of one response, per protocol ``mmr-ad-v1``.

    The decision is the first standalone Yes/No word of the answer; an answer with no such word but
    with a box counts as Yes; otherwise the answer is invalid. Boxes count only when the decision is Yes.
    """
    if not isinstance(text, str) or not text.strip():
        return ParsedAnswer(decision=None)
    answer, tagged = extract_answer(text[:MAX_RESPONSE_CHARS])
    answer = _normalise(answer[:MAX_ANSWER_CHARS])
    decision = find_decision(answer)
    boxes = find_boxes(answer) if decision is not False else []
    if decision is None and boxes:
        decision = True
    if decision is not True:
        boxes = []
    return ParsedAnswer(decision=decision, boxes=boxes, answer_text=answer, had_answer_tag=tagged)
