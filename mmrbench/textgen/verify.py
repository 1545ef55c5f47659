"""Consistency check of a generated reasoning text (paper Sec. 3.2) and its convention-neutral form.

A text is kept only when its answer agrees with the ground truth: ``No`` for a normal sample; for an
anomalous one ``Yes`` with exactly as many boxes as ground truth, matched one-to-one at IoU > 0.9,
each matched pair's labels semantically similar (> 0.6). It must also carry reasoning
(a non-empty ``<think>``) and never mention the hint (:mod:`mmrbench.textgen.leak`).

Kept texts are stored in original-image pixels: the ``<answer>`` is rewritten with the ground-truth
boxes (the model's labels, in the model's order) and every ``[a, b, c, d]`` list inside
``<think>`` is mapped from the generator's frame to original pixels. A trainer re-expresses them in
its policy's frame with :func:`reexpress`; a text written by one model's convention never leaks
into another's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mmrbench.coords import from_original, to_original
from mmrbench.data.schema import Box, Sample
from mmrbench.geometry import iou_matrix, match_boxes
from mmrbench.parsing import parse_answer
from mmrbench.prompts import format_answer
from mmrbench.textgen.leak import find_leaks

IOU_THRESHOLD = 0.9
SIM_THRESHOLD = 0.6

#: rejection reasons, in the order they are checked; a rejected text's primary reason is the first
REASONS = ("api_error", "no_answer", "wrong_decision", "wrong_box_count", "box_iou_low", "label_mismatch",
           "no_reasoning", "hint_leak")
REASON_TEXT = {
    "api_error": "API error (after retries)",
    "no_answer": "no answer (refused, truncated, or no readable Yes/No)",
    "wrong_decision": "wrong decision",
    "wrong_box_count": "wrong number of boxes",
    "box_iou_low": "box IoU <= 0.9",
    "label_mismatch": "label similarity <= 0.6",
    "no_reasoning": "no <think> reasoning",
    "hint_leak": "mentions the hint",
}

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.S | re.I)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_LIST4_RE = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")

SimilarityFn = Callable[[Sequence[tuple[str, str]]], list[float]]


@dataclass
class Frame:
    """How the generator wrote boxes: its convention and the query's size as sent."""

    convention: str
    sent_size: tuple[int, int] | None
    original_size: tuple[int, int]

    def to_original(self, coords: Sequence[float]) -> tuple[float, float, float, float]:
        return to_original(coords, self.convention, self.sent_size, self.original_size)


@dataclass
class Verdict:
    """Outcome of the check for one text. ``reasons`` lists every failed check, ``reason`` the first."""

    kept: bool
    reasons: list[str] = field(default_factory=list)
    decision: bool | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # original pixels
    labels: list[str] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)          # per matched pair
    similarities: list[float] = field(default_factory=list)  # per matched pair
    leaks: list[str] = field(default_factory=list)
    text: str | None = None  # the convention-neutral text, when kept
    detail: str = ""
    #: the adapter sent the query at another size than the hint was written for (see hints.planned_sent_size)
    frame_mismatch: bool = False

    @property
    def reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None

    def to_json(self) -> dict:
        d: dict[str, Any] = {"kept": self.kept, "reason": self.reason, "reasons": self.reasons, "decision": self.decision,
             "detail": self.detail}
        if self.ious:
            d["ious"] = [round(v, 4) for v in self.ious]
        if self.similarities:
            d["similarities"] = [round(v, 4) for v in self.similarities]
        if self.leaks:
            d["leaks"] = self.leaks
        if self.frame_mismatch:
            d["frame_mismatch"] = True
        return d


def think_text(text: str) -> str | None:
    m = _THINK_RE.search(text)
    return m.group(1) if m else None


def rewrite_lists(text: str, fn: Callable[[tuple[float, float, float, float]], Sequence[float]]) -> str:
    """Apply ``fn`` to every ``[a, b, c, d]`` number list in ``text`` (rounded to integers)."""

    def sub(m: re.Match) -> str:
        try:
            vals = tuple(float(g) for g in m.groups())
        except ValueError:  # pragma: no cover - the regex admits only numbers
            return m.group(0)
        if not all(abs(v) < 1e7 for v in vals):
            return m.group(0)
        new = fn(vals)  # type: ignore[arg-type]
        return "[" + ", ".join(str(int(round(v))) for v in new) + "]"

    return _LIST4_RE.sub(sub, text)


def to_original_text(text: str, frame: Frame) -> str:
    """Every number list of ``text`` mapped from the generator's frame to original pixels."""
    return rewrite_lists(text, frame.to_original)


def reexpress(text: str, convention: str, sent_size: tuple[int, int] | None,
              original_size: tuple[int, int]) -> str:
    """A stored (original-pixel) text with every box rewritten in a policy's convention and frame:
    what a trainer feeds as the assistant turn for a model that sees the image at ``sent_size``."""
    return rewrite_lists(text, lambda c: from_original(c, convention, sent_size, original_size))


def neutral_text(think: str, frame: Frame, sample: Sample, labels: Sequence[str],
                 gt_order: Sequence[int]) -> str:
    """The stored form of a kept text: think in original pixels, canonical answer from ground truth."""
    think_o = to_original_text(think.strip(), frame)
    if not sample.is_anomalous:
        return f"<think>{think_o}</think>{format_answer(False)}"
    boxes = [Box(*sample.boxes[g].xyxy, label=labels[i] or sample.boxes[g].label) for i, g in enumerate(gt_order)]
    return f"<think>{think_o}</think>{format_answer(True, boxes)}"


def verify_text(sample: Sample, text: str | None, *, frame: Frame,
                reference_boxes: Sequence[Sequence[float]] | None = None,
                similarity: SimilarityFn | None = None, status: str = "ok",
                iou_threshold: float = IOU_THRESHOLD, sim_threshold: float = SIM_THRESHOLD) -> Verdict:
    """Check one positive (true-hint) text against ``sample``'s ground truth.

    ``reference_boxes`` are the boxes the answer must reproduce, in original pixels and in the
    ground truth's order (default: the ground truth itself; the pipeline passes the hint as the
    model saw it, see :func:`mmrbench.textgen.hints.hinted_boxes`). ``similarity`` maps label pairs
    to cosine similarities and is required for anomalous samples.
    """
    v = Verdict(kept=False)
    if status == "error":
        v.reasons.append("api_error")
        v.detail = "the request failed"
        return v
    if status in ("refused", "truncated") or not isinstance(text, str) or not text.strip():
        v.reasons.append("no_answer")
        v.detail = f"status {status}" if status != "ok" else "empty response"
        return v
    parsed = parse_answer(text)
    v.decision = parsed.decision
    if parsed.decision is None:
        v.reasons.append("no_answer")
        v.detail = "no readable Yes/No"
        return v
    think = think_text(text)
    leaks = find_leaks(text)
    v.leaks = [lk.text for lk in leaks]
    gt_order: list[int] = []
    if parsed.decision != sample.is_anomalous:
        v.reasons.append("wrong_decision")
        v.detail = f"answered {'Yes' if parsed.decision else 'No'} on a {sample.label} sample"
    elif sample.is_anomalous:
        v.boxes = [frame.to_original(b.coords) for b in parsed.boxes]
        v.labels = [b.label for b in parsed.boxes]
        refs = [tuple(map(float, b)) for b in (reference_boxes if reference_boxes is not None
                                               else [b.xyxy for b in sample.boxes])]
        if len(v.boxes) != len(refs):
            v.reasons.append("wrong_box_count")
            v.detail = f"{len(v.boxes)} boxes for {len(refs)} ground-truth boxes"
        else:
            matches = match_boxes(v.boxes, refs, iou_threshold, strict=True)
            by_pred = {p: (g, val) for p, g, val in matches}
            v.ious = [by_pred[p][1] for p in sorted(by_pred)]
            if len(matches) < len(refs):
                v.reasons.append("box_iou_low")
                matched_g = {g for _, g, _ in matches}
                best = iou_matrix(v.boxes, refs).max(axis=0)
                worst = ", ".join(f"{best[g]:.2f}" for g in range(len(refs)) if g not in matched_g)
                v.detail = (f"{len(refs) - len(matches)} of {len(refs)} boxes not matched at IoU > {iou_threshold:g} "
                            f"(best IoU of the unmatched: {worst})")
            else:
                gt_order = [by_pred[p][0] for p in range(len(v.boxes))]
                if similarity is None:
                    raise ValueError("verify_text needs a label similarity function for anomalous samples")
                pairs = [(v.labels[p], sample.boxes[g].label) for p, g in enumerate(gt_order)]
                v.similarities = list(similarity(pairs))
                bad = [(a, b, s) for (a, b), s in zip(pairs, v.similarities) if not s > sim_threshold]
                if bad:
                    v.reasons.append("label_mismatch")
                    v.detail = "; ".join(f"'{a}' vs '{b}': {s:.2f}" for a, b, s in bad)
    if not think or not think.strip():
        v.reasons.append("no_reasoning")
        v.detail = v.detail or "no <think>...</think> text"
    if leaks:
        v.reasons.append("hint_leak")
        v.detail = v.detail or "mentions the hint: " + ", ".join(repr(x) for x in v.leaks[:3])
    if v.reasons:
        return v
    v.kept = True
    v.text = neutral_text(think or "", frame, sample, v.labels, gt_order)
    return v


def verify_negative(sample: Sample, text: str | None, *, frame: Frame, status: str = "ok") -> Verdict:
    """Check an opposite-hint text: kept only when it is truly wrong (its decision contradicts the
    label), readable, and silent about the hint. Stored with every box list in original pixels."""
    v = Verdict(kept=False)
    if status == "error":
        v.reasons.append("api_error")
        return v
    if status in ("refused",) or not isinstance(text, str) or not text.strip():
        v.reasons.append("no_answer")
        return v
    parsed = parse_answer(text)
    v.decision = parsed.decision
    if parsed.decision is None:
        v.reasons.append("no_answer")
        v.detail = "no readable Yes/No"
        return v
    if parsed.decision == sample.is_anomalous:
        v.reasons.append("wrong_decision")  # for a negative, "wrong" means it got the label right
        v.detail = f"answered {'Yes' if parsed.decision else 'No'} on a {sample.label} sample: not a negative"
    leaks = find_leaks(text)
    if leaks:
        v.leaks = [lk.text for lk in leaks]
        v.reasons.append("hint_leak")
    if v.reasons:
        return v
    v.kept = True
    v.text = to_original_text(text.strip(), frame)
    return v
