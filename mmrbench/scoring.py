"""The Table-4 scorer of protocol ``mmr-ad-v1``: pure functions from decisions to metrics.

Detection is scored per image (anomalous = positive); localization per box with one-to-one
matching at IoU >= 0.1. Every metric is computed per category and macro-averaged over the
categories of a subdataset. A ratio with a zero denominator is 0 and is flagged. An unreadable
answer, or a sample with no prediction at all, is scored as wrong, never dropped.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from mmrbench.coords import to_original
from mmrbench.data.schema import Sample
from mmrbench.geometry import match_boxes
from mmrbench.parsing import parse_answer
from mmrbench.predictions import Prediction

LOC_IOU = 0.1
METRICS = ("accuracy", "recall", "precision")


@dataclass(frozen=True)
class Decision:
    """A model's verdict on one sample, boxes already in original pixels."""

    decision: bool | None
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    missing: bool = False


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, other: "Counts") -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn


def _ratio(num: int, den: int, name: str, flags: list[str]) -> float:
    if den == 0:
        flags.append(name)
        return 0.0
    return num / den


def detection_metrics(c: Counts, flags: list[str] | None = None) -> dict[str, float]:
    """accuracy (TP+TN)/N, recall TP/(TP+FN), precision TP/(TP+FP)."""
    flags = flags if flags is not None else []
    n = c.tp + c.tn + c.fp + c.fn
    return {
        "accuracy": _ratio(c.tp + c.tn, n, "det.accuracy", flags),
        "recall": _ratio(c.tp, c.tp + c.fn, "det.recall", flags),
        "precision": _ratio(c.tp, c.tp + c.fp, "det.precision", flags),
    }


def localization_metrics(c: Counts, flags: list[str] | None = None) -> dict[str, float]:
    """accuracy TP/(TP+FP+FN), recall TP/(TP+FN), precision TP/(TP+FP) over boxes."""
    flags = flags if flags is not None else []
    return {
        "accuracy": _ratio(c.tp, c.tp + c.fp + c.fn, "loc.accuracy", flags),
        "recall": _ratio(c.tp, c.tp + c.fn, "loc.recall", flags),
        "precision": _ratio(c.tp, c.tp + c.fp, "loc.precision", flags),
    }


def detection_counts(is_anomalous: bool, decision: bool | None) -> Counts:
    """One image. An invalid answer (None) is wrong: FN on an anomalous image, FP on a normal one."""
    if decision is None:
        return Counts(fn=1) if is_anomalous else Counts(fp=1)
    if is_anomalous:
        return Counts(tp=1) if decision else Counts(fn=1)
    return Counts(fp=1) if decision else Counts(tn=1)


def localization_counts(pred_boxes: Sequence[Sequence[float]], gt_boxes: Sequence[Sequence[float]],
                        iou_threshold: float = LOC_IOU) -> Counts:
    """One image: matched pairs are TP, unmatched predictions FP, unmatched ground truth FN."""
    tp = len(match_boxes(pred_boxes, gt_boxes, iou_threshold)) if pred_boxes and gt_boxes else 0
    return Counts(tp=tp, fp=len(pred_boxes) - tp, fn=len(gt_boxes) - tp)


@dataclass
class CategoryScore:
    subdataset: str
    category: str
    n: int = 0
    n_anomalous: int = 0
    n_gt_boxes: int = 0
    invalid: int = 0
    missing: int = 0
    det_counts: Counts = field(default_factory=Counts)
    loc_counts: Counts = field(default_factory=Counts)
    det: dict[str, float] = field(default_factory=dict)
    loc: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def finalize(self) -> None:
        self.flags = []
        self.det = detection_metrics(self.det_counts, self.flags)
        self.loc = localization_metrics(self.loc_counts, self.flags)

    def to_json(self) -> dict:
        return {
            "category": self.category, "n": self.n, "n_anomalous": self.n_anomalous,
            "n_gt_boxes": self.n_gt_boxes, "invalid": self.invalid, "missing": self.missing,
            "det": self.det, "loc": self.loc,
            "det_counts": vars(self.det_counts).copy(), "loc_counts": vars(self.loc_counts).copy(),
            "flags": list(self.flags),
        }


@dataclass
class SubdatasetScore:
    name: str
    categories: list[CategoryScore]
    det: dict[str, float] = field(default_factory=dict)
    loc: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return sum(c.n for c in self.categories)

    @property
    def invalid(self) -> int:
        return sum(c.invalid for c in self.categories)

    @property
    def missing(self) -> int:
        return sum(c.missing for c in self.categories)

    @property
    def invalid_rate(self) -> float:
        return self.invalid / self.n if self.n else 0.0

    def finalize(self) -> None:
        k = len(self.categories)
        self.det = {m: sum(c.det[m] for c in self.categories) / k for m in METRICS}
        self.loc = {m: sum(c.loc[m] for c in self.categories) / k for m in METRICS}

    def cell(self, metric: str) -> str:
        """Table-4 cell ``det/loc`` in percent with one decimal."""
        return f"{100 * self.det[metric]:.1f}/{100 * self.loc[metric]:.1f}"

    def to_json(self) -> dict:
        return {
            "det": self.det, "loc": self.loc, "n": self.n, "invalid": self.invalid,
            "missing": self.missing, "invalid_rate": self.invalid_rate,
            "categories": [c.to_json() for c in self.categories],
        }


@dataclass
class ScoreReport:
    subdatasets: dict[str, SubdatasetScore]
    iou_threshold: float = LOC_IOU

    def to_json(self) -> dict:
        return {"iou_threshold": self.iou_threshold,
                "subdatasets": {k: v.to_json() for k, v in self.subdatasets.items()}}

    def rows(self) -> list[dict]:
        return [{"subdataset": name, **{m: s.cell(m) for m in METRICS}, "n": s.n,
                 "invalid": s.invalid, "missing": s.missing} for name, s in self.subdatasets.items()]

    def render(self, fmt: str = "table") -> str:
        from mmrbench.report import render_rows
        return render_rows(self.rows(), fmt)


def score_decisions(samples: Iterable[Sample], decisions: Mapping[str, Decision],
                    iou_threshold: float = LOC_IOU) -> ScoreReport:
    """Score every sample; a sample without a decision counts as missing (and invalid)."""
    cats: dict[tuple[str, str], CategoryScore] = {}
    for s in samples:
        key = (s.subdataset, s.category)
        cs = cats.get(key)
        if cs is None:
            cs = cats[key] = CategoryScore(s.subdataset, s.category)
        d = decisions.get(s.id)
        if d is None:
            d = Decision(None, (), missing=True)
        cs.n += 1
        cs.n_anomalous += int(s.is_anomalous)
        cs.n_gt_boxes += len(s.boxes)
        cs.invalid += int(d.decision is None)
        cs.missing += int(d.missing)
        cs.det_counts.add(detection_counts(s.is_anomalous, d.decision))
        pred_boxes = d.boxes if d.decision else ()
        cs.loc_counts.add(localization_counts(pred_boxes, [b.xyxy for b in s.boxes], iou_threshold))
    by_sub: dict[str, list[CategoryScore]] = defaultdict(list)
    for (sub, _), cs in sorted(cats.items()):
        cs.finalize()
        by_sub[sub].append(cs)
    subs = {}
    for sub, lst in by_sub.items():
        ss = SubdatasetScore(sub, lst)
        ss.finalize()
        subs[sub] = ss
    return ScoreReport(subs, iou_threshold)


def decision_from_prediction(pred: Prediction, sample: Sample, threshold: float | None = None) -> Decision:
    """Turn one prediction line into a decision with boxes in original pixels.

    Text answers are parsed; boxes are mapped from the recorded convention and sent size (pixels of
    the original image when the line records neither). Detector lines need a threshold.
    """
    if pred.response is None and pred.score is not None:
        if threshold is None:
            from mmrbench.errors import MMRBenchError
            raise MMRBenchError(f"prediction '{pred.id}' holds a detector score: a threshold is needed to score it")
        yes = pred.score >= threshold - 1e-12
        boxes: tuple = ()
        if yes and pred.boxes_by_threshold:
            key = threshold_key(threshold)
            boxes = tuple(tuple(float(v) for v in b) for b in pred.boxes_by_threshold.get(key, []))
        return Decision(yes, boxes)
    parsed = parse_answer(pred.response)
    if parsed.decision is not True:
        return Decision(parsed.decision)
    conv = pred.convention or "pixel"
    orig = (sample.width, sample.height)
    boxes = tuple(to_original(b.coords, conv, pred.query_size, orig) for b in parsed.boxes)
    return Decision(True, boxes)


def threshold_key(t: float) -> str:
    """Canonical key of a detector threshold in ``boxes_by_threshold`` ("0.0" ... "1.0")."""
    return f"{t:.1f}" if abs(t * 10 - round(t * 10)) < 1e-9 else f"{t:g}"


def score_predictions(samples: Iterable[Sample], predictions: Iterable[Prediction], *,
                      threshold: float | None = None, iou_threshold: float = LOC_IOU) -> ScoreReport:
    """Score predictions against samples (typically a manifest's test split).

    Predictions for ids outside ``samples`` are ignored; samples without a prediction are missing.
    """
    samples = list(samples)
    by_id = {s.id: s for s in samples}
    decisions: dict[str, Decision] = {}
    for p in predictions:
        s = by_id.get(p.id)
        if s is not None and p.id not in decisions:
            decisions[p.id] = decision_from_prediction(p, s, threshold)
    return score_decisions(samples, decisions, iou_threshold)
