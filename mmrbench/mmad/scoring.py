"""MMAD's tables from answered questions: pure functions, no I/O except reading an answers file.

Definitions (MMAD's ``evaluation/examples/helper/summary.py``, ``caculate_accuracy_mmad``, at commit
bad03b44c30fdb4d0e1774e07e0f245fbaae3b6c; restated here, the code is our own):

* rows are source datasets (first component of the image path), then an ``Average`` row, the plain
  mean of the dataset rows;
* a subtask's accuracy is correct / asked; "Object Structure" and "Object Details" count as
  "Object Analysis";
* Anomaly Detection is the mean of the accuracy on normal images (``good`` in the path) and the
  accuracy on anomalous images; with anomalous = positive, TP = anomalous answered right, FN =
  anomalous answered wrong, TN = normal answered right, FP = normal answered wrong; recall, precision,
  F1 from those; overkill = 1 - normal accuracy, miss = 1 - anomalous accuracy;
* ``Average`` (column) is the mean of the subtask columns of the row. All figures are percentages.

Two modes for answers that carry no letter (unparseable text, an error, no answer at all):

* ``strict`` (default): they stay in the denominator and count as wrong (an unparseable answer to the
  detection question is an overkill on a normal image and a miss on an anomalous one). An empty
  denominator gives ``None``, never a number.
* ``mmad-compatible``: they are dropped from every denominator, as MMAD's summary does, and an empty
  denominator gives 0 (also MMAD's rule), so its published tables can be reproduced.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.mmad.data import AD_SUBTASK, LETTERS, NORMAL_FLAG, SUBTASKS, subtask_of

if TYPE_CHECKING:
    from mmrbench.runinfo import RunSummary

MODES = ("strict", "mmad-compatible")
DETECTION_COLUMNS = ("Recall", "Precision", "F1", "Overkill", "Miss")


@dataclass(frozen=True)
class AnswerRecord:
    """One judged question: ``given`` is the model's letter, or ``None`` with ``reason`` saying why
    (``unparseable``, ``error``, ``missing``)."""

    dataset: str
    type: str
    is_normal: bool
    correct: str
    given: str | None
    reason: str | None = None

    @property
    def subtask(self) -> str:
        return subtask_of(self.type)

    @property
    def right(self) -> bool:
        return self.given is not None and self.given == self.correct


@dataclass
class MMADReport:
    mode: str
    columns: list[str]
    rows: dict[str, dict[str, float | None]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: how the run ended, set by the runner (not serialised: the CLI's exit code)
    run_summary: RunSummary | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "columns": list(self.columns), "rows": self.rows, "counts": self.counts}

    def render(self, fmt: str = "github") -> str:
        from tabulate import tabulate

        def cell(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        body = [[name] + [cell(r.get(c)) for c in self.columns] for name, r in self.rows.items()]
        table = tabulate(body, headers=["dataset"] + self.columns, tablefmt=fmt, disable_numparse=True)
        tot = self.counts.get("total", {})
        note = (f"mode {self.mode}: {tot.get('questions', 0)} questions, {tot.get('scored', 0)} scored, "
                f"{tot.get('unparseable', 0)} unparseable, {tot.get('error', 0)} error, {tot.get('missing', 0)} missing")
        if self.mode == "strict":
            note += " (answers without a letter count as wrong)"
        else:
            note += " (answers without a letter are left out, as in MMAD's summary)"
        return table + "\n" + note


def _ratio(num: int, den: int, compat: bool) -> float | None:
    if den == 0:
        return 0.0 if compat else None
    return num / den


def _pct(x: float | None) -> float | None:
    return None if x is None else x * 100


def _mean(values: Iterable[float | None], compat: bool) -> float | None:
    vals = [v for v in values if v is not None]
    return fmean(vals) if vals else (0.0 if compat else None)


def score_records(records: Sequence[AnswerRecord], mode: str = "strict") -> MMADReport:
    """The MMAD table (datasets x subtasks + detection columns) for judged questions."""
    if mode not in MODES:
        raise ConfigError(f"unknown MMAD scoring mode '{mode}' (known: {', '.join(MODES)})")
    compat = mode == "mmad-compatible"
    datasets: list[str] = []
    seen_types: list[str] = []
    for r in records:  # columns and rows come from every record, dropped ones included (as MMAD does)
        if r.dataset not in datasets:
            datasets.append(r.dataset)
        if r.subtask not in seen_types:
            seen_types.append(r.subtask)
    subtasks = [s for s in SUBTASKS if s in seen_types] + [s for s in seen_types if s not in SUBTASKS]

    asked = {d: {s: 0 for s in subtasks} for d in datasets}
    right = {d: {s: 0 for s in subtasks} for d in datasets}
    det = {d: {"normal": [0, 0], "anomalous": [0, 0]} for d in datasets}  # [asked, right]
    counts = {d: {"questions": 0, "scored": 0, "unparseable": 0, "error": 0, "missing": 0} for d in datasets}
    for r in records:
        c = counts[r.dataset]
        c["questions"] += 1
        if r.given is None:
            c[r.reason if r.reason in ("error", "missing") else "unparseable"] += 1
            if compat:
                continue
        c["scored"] += 1
        asked[r.dataset][r.subtask] += 1
        right[r.dataset][r.subtask] += r.right
        if r.subtask == AD_SUBTASK:
            side = det[r.dataset]["normal" if r.is_normal else "anomalous"]
            side[0] += 1
            side[1] += r.right

    columns = list(subtasks) + ["Average"] + (list(DETECTION_COLUMNS) if AD_SUBTASK in subtasks else [])
    rows: dict[str, dict[str, float | None]] = {}
    for d in datasets:
        row: dict[str, float | None] = {s: _pct(_ratio(right[d][s], asked[d][s], compat)) for s in subtasks}
        if AD_SUBTASK in subtasks:
            (n_norm, tn), (n_anom, tp) = det[d]["normal"], det[d]["anomalous"]
            fp = n_norm - tn  # misses are n_anom - tp: recall is the anomalous accuracy below
            normal_acc, anomaly_acc = _ratio(tn, n_norm, compat), _ratio(tp, n_anom, compat)
            both = None if normal_acc is None or anomaly_acc is None else (normal_acc + anomaly_acc) / 2
            row[AD_SUBTASK] = _pct(both)
        row["Average"] = _mean((row[s] for s in subtasks), compat)
        if AD_SUBTASK in subtasks:
            precision = _ratio(tp, tp + fp, compat)
            recall = anomaly_acc
            if precision is None or recall is None:
                f1 = None
            else:
                f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            row.update({"Recall": _pct(recall), "Precision": _pct(precision), "F1": _pct(f1),
                        "Overkill": _pct(None if normal_acc is None else 1 - normal_acc),
                        "Miss": _pct(None if anomaly_acc is None else 1 - anomaly_acc)})
        rows[d] = row
    if datasets:
        rows["Average"] = {c: _mean((rows[d][c] for d in datasets), compat) for c in columns}
    total = {k: sum(c[k] for c in counts.values()) for k in ("questions", "scored", "unparseable", "error", "missing")}
    return MMADReport(mode=mode, columns=columns, rows=rows, counts={**counts, "total": total})


# -- MMAD's own answers files ------------------------------------------------------------------------
def records_from_mmad_answers(entries: Any, where: str = "<answers>") -> list[AnswerRecord]:
    """The answers JSON that MMAD's query scripts write (a list of {image, question_type,
    correct_answer, gpt_answer, ...}) as records; a ``gpt_answer`` that is not one letter A-E has no
    letter. A ``correct_answer`` that is not a letter is a broken file, not a model mistake."""
    if not isinstance(entries, list):
        raise MMRBenchError(f"{where}: field '<top level>': must be a list of answers")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise MMRBenchError(f"{where}: entry {i}: must be an object")
        for k in ("image", "question_type", "correct_answer"):
            if not isinstance(e.get(k), str) or not e.get(k):
                raise MMRBenchError(f"{where}: entry {i}: field '{k}': must be a non-empty string")
        if e["correct_answer"] not in LETTERS:
            raise MMRBenchError(f"{where}: entry {i}: field 'correct_answer': must be one of A-E")
        given = e.get("gpt_answer")
        ok = isinstance(given, str) and given in LETTERS
        out.append(AnswerRecord(dataset=e["image"].split("/")[0], type=e["question_type"],
                                is_normal=NORMAL_FLAG in e["image"], correct=e["correct_answer"],
                                given=given if ok else None, reason=None if ok else "unparseable"))
    return out


def score_mmad_answers_file(path: str | os.PathLike, mode: str = "mmad-compatible") -> MMADReport:
    from mmrbench.validation import read_json_file
    p = Path(path)
    entries = read_json_file(p, "answers file")
    return score_records(records_from_mmad_answers(entries, str(p)), mode)
