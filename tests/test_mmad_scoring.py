"""MMAD's scoring rules, hand-computed in both modes, and an independent re-derivation of MMAD's
definition on a constructed answers file (mmad-compatible mode must give the same table)."""
from __future__ import annotations

import json
import random

import pytest

from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.mmad.scoring import AnswerRecord, score_mmad_answers_file, score_records


def rec(ds, qtype, normal, correct, given, reason=None):
    return AnswerRecord(ds, qtype, normal, correct, given, reason if given is None else None)


def hand_records():
    X, Y = "X", "Y"
    AD = "Anomaly Detection"
    return [
        # X, detection on normal images (correct B): right, wrong, unparseable
        rec(X, AD, True, "B", "B"), rec(X, AD, True, "B", "A"), rec(X, AD, True, "B", None, "unparseable"),
        # X, detection on anomalous images (correct A): right, right, wrong, error
        rec(X, AD, False, "A", "A"), rec(X, AD, False, "A", "A"), rec(X, AD, False, "A", "B"),
        rec(X, AD, False, "A", None, "error"),
        # X, defect classification: 2 right, 1 wrong, 1 missing
        rec(X, "Defect Classification", False, "C", "C"), rec(X, "Defect Classification", False, "D", "D"),
        rec(X, "Defect Classification", False, "C", "A"), rec(X, "Defect Classification", False, "C", None, "missing"),
        # X, Object Structure + Object Details = Object Analysis: 1 right, 1 wrong, 1 unparseable
        rec(X, "Object Structure", False, "A", "A"), rec(X, "Object Details", True, "B", "C"),
        rec(X, "Object Details", True, "B", None, "unparseable"),
        # Y: one normal image, detection answered right, nothing else
        rec(Y, AD, True, "B", "B"),
    ]


def test_strict_hand_computed():
    r = score_records(hand_records())  # strict is the default
    assert r.mode == "strict"
    assert r.columns == ["Anomaly Detection", "Defect Classification", "Object Analysis", "Average",
                         "Recall", "Precision", "F1", "Overkill", "Miss"]
    x = r.rows["X"]
    # normal acc 1/3 (the unparseable answer is wrong), anomalous acc 2/4 (the error is wrong)
    assert x["Anomaly Detection"] == pytest.approx((1 / 3 + 2 / 4) / 2 * 100)
    assert x["Defect Classification"] == pytest.approx(50.0)           # 2 of 4, missing counts
    assert x["Object Analysis"] == pytest.approx(100 / 3)              # 1 of 3
    assert x["Average"] == pytest.approx(((1 / 3 + 1 / 2) / 2 * 100 + 50 + 100 / 3) / 3)
    # TP 2, FN 2 (wrong + error), TN 1, FP 2 (wrong + unparseable)
    assert x["Recall"] == pytest.approx(50.0) and x["Precision"] == pytest.approx(50.0) and x["F1"] == pytest.approx(50.0)
    assert x["Overkill"] == pytest.approx(200 / 3) and x["Miss"] == pytest.approx(50.0)
    y = r.rows["Y"]
    # empty denominators are undefined in strict mode, never a number
    assert y["Anomaly Detection"] is None and y["Defect Classification"] is None and y["Object Analysis"] is None
    assert y["Average"] is None and y["Recall"] is None and y["Precision"] is None and y["F1"] is None
    assert y["Overkill"] == 0.0 and y["Miss"] is None
    avg = r.rows["Average"]
    assert avg["Anomaly Detection"] == pytest.approx(x["Anomaly Detection"])  # Y has none
    assert avg["Overkill"] == pytest.approx((200 / 3 + 0) / 2)
    t = r.counts["total"]
    assert (t["questions"], t["scored"], t["unparseable"], t["error"], t["missing"]) == (15, 15, 2, 1, 1)


def test_mmad_compatible_hand_computed():
    r = score_records(hand_records(), "mmad-compatible")
    x = r.rows["X"]
    # unparseable / error / missing dropped: normal 1/2, anomalous 2/3
    assert x["Anomaly Detection"] == pytest.approx((1 / 2 + 2 / 3) / 2 * 100)
    assert x["Defect Classification"] == pytest.approx(200 / 3)
    assert x["Object Analysis"] == pytest.approx(50.0)
    # TP 2, FN 1, TN 1, FP 1
    assert x["Recall"] == pytest.approx(200 / 3) and x["Precision"] == pytest.approx(200 / 3)
    assert x["F1"] == pytest.approx(200 / 3)
    assert x["Overkill"] == pytest.approx(50.0) and x["Miss"] == pytest.approx(100 / 3)
    y = r.rows["Y"]
    # MMAD's rule: an empty denominator is 0, and a subtask absent from a dataset still scores 0
    assert y["Anomaly Detection"] == pytest.approx(50.0)  # (1 + 0) / 2
    assert y["Defect Classification"] == 0.0 and y["Object Analysis"] == 0.0
    assert y["Average"] == pytest.approx(50 / 3)
    assert (y["Recall"], y["Precision"], y["F1"], y["Overkill"], y["Miss"]) == (0.0, 0.0, 0.0, 0.0, 100.0)
    assert r.rows["Average"]["Defect Classification"] == pytest.approx((200 / 3 + 0) / 2)
    t = r.counts["total"]
    assert (t["questions"], t["scored"], t["unparseable"], t["error"], t["missing"]) == (15, 11, 2, 1, 1)


def test_subtask_with_only_unparseable_answers():
    recs = [rec("Z", "Defect Description", False, "A", None, "unparseable")]
    assert score_records(recs).rows["Z"]["Defect Description"] == 0.0               # strict: 0 of 1
    assert score_records(recs, "mmad-compatible").rows["Z"]["Defect Description"] == 0.0  # dropped: 0/0 -> 0
    assert "Recall" not in score_records(recs).columns  # no detection question, no detection columns


def test_unknown_mode_and_render():
    with pytest.raises(ConfigError, match="unknown MMAD scoring mode 'lenient'"):
        score_records(hand_records(), "lenient")
    text = score_records(hand_records()).render()
    assert "| X " in text and "| -" in text and "answers without a letter count as wrong" in text
    json.dumps(score_records(hand_records()).to_json())


# -- MMAD's definition, re-derived independently -----------------------------------------------------
def reference_mmad_table(answers: list[dict]) -> dict[str, dict[str, float]]:
    """MMAD's summary, written from its definition as plainly as possible: drop entries whose answer
    is not a letter A-E, then per dataset: accuracy per subtask (Object Structure/Details merged, 0 when
    nothing is left), AD = mean of normal and anomalous accuracy, detection counts from the AD entries."""
    def ds(a):
        return a["image"].split("/")[0]

    def st(a):
        return "Object Analysis" if a["question_type"] in ("Object Structure", "Object Details") else a["question_type"]

    datasets = sorted({ds(a) for a in answers})
    subtasks = sorted({st(a) for a in answers})
    kept = [a for a in answers if a["gpt_answer"] in list("ABCDE")]

    def acc(items):
        return 100.0 * sum(a["gpt_answer"] == a["correct_answer"] for a in items) / len(items) if items else 0.0

    table = {}
    for d in datasets:
        row = {s: acc([a for a in kept if ds(a) == d and st(a) == s]) for s in subtasks}
        ad = [a for a in kept if ds(a) == d and st(a) == "Anomaly Detection"]
        normal = [a for a in ad if "good" in a["image"]]
        anomalous = [a for a in ad if "good" not in a["image"]]
        row["Anomaly Detection"] = (acc(normal) + acc(anomalous)) / 2
        row["Average"] = sum(row[s] for s in subtasks) / len(subtasks)
        tp = sum(a["gpt_answer"] == a["correct_answer"] for a in anomalous)
        fp = sum(a["gpt_answer"] != a["correct_answer"] for a in normal)
        precision = 100.0 * tp / (tp + fp) if tp + fp else 0.0
        recall = acc(anomalous)
        row["Precision"], row["Recall"] = precision, recall
        row["F1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        row["Overkill"], row["Miss"] = 100.0 - acc(normal), 100.0 - recall
        table[d] = row
    cols = list(table[datasets[0]])
    table["Average"] = {c: sum(table[d][c] for d in datasets) / len(datasets) for c in cols}
    return table


def constructed_answers(seed=7):
    rng = random.Random(seed)
    types = ["Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
             "Defect Analysis", "Object Classification", "Object Structure", "Object Details"]
    junk = ["", "The image shows a bottle.", "Answer", "F", "a"]
    out = []
    for d in ("DS-MVTec", "MVTec-LOCO", "VisA"):
        for i in range(40):
            normal = i % 3 == 0
            image = f"{d}/cat{i % 4}/test/{'good' if normal else 'crack'}/{i:03d}.png"
            for t in (types if not normal else ["Anomaly Detection", "Object Classification", "Object Details"]):
                correct = rng.choice("ABCD")
                roll = rng.random()
                given = correct if roll < 0.55 else (rng.choice("ABCDE") if roll < 0.85 else rng.choice(junk))
                out.append({"image": image, "question": {"type": "text", "text": "Question: ..."},
                            "question_type": t, "correct_answer": correct, "gpt_answer": given})
    return out


def test_mmad_compatible_equals_independent_definition(tmp_path):
    answers = constructed_answers()
    assert sum(a["gpt_answer"] not in list("ABCDE") for a in answers) > 20  # the file really has junk answers
    path = tmp_path / "answers_1_shot_model.json"
    path.write_text(json.dumps(answers), encoding="utf-8")
    ours = score_mmad_answers_file(path, "mmad-compatible")
    ref = reference_mmad_table(answers)
    assert set(ours.rows) == set(ref)
    for name, row in ref.items():
        for col, v in row.items():
            assert ours.rows[name][col] == pytest.approx(v, abs=1e-9), (name, col)
    # strict differs exactly because the junk answers now count as wrong
    strict = score_mmad_answers_file(path, "strict")
    assert strict.rows["Average"]["Average"] < ours.rows["Average"]["Average"]


def test_answers_file_errors(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"image": "X/c/good/1.png", "question_type": "Anomaly Detection", "correct_answer": "Z",
                              "gpt_answer": "A"}]))
    with pytest.raises(MMRBenchError, match=r"a.json: entry 0: field 'correct_answer'"):
        score_mmad_answers_file(p)
    p.write_text("[")
    with pytest.raises(MMRBenchError, match="not valid JSON"):
        score_mmad_answers_file(p)
