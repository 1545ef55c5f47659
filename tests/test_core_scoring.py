"""The Table-4 scorer against hand-computed cases: the benchmark's credibility rests on these."""
import pytest

from mmrbench.data.schema import Box, Sample
from mmrbench.geometry import iou, match_boxes
from mmrbench.predictions import Prediction
from mmrbench.scoring import (Counts, Decision, detection_metrics, localization_counts, localization_metrics,
                              score_decisions, score_predictions)


def sample(sid, cat="c1", sub="S", boxes=(), w=100, h=100):
    return Sample(id=sid, subdataset=sub, category=cat, split="test", image=f"{sid}.png",
                  label="anomalous" if boxes else "normal", width=w, height=h, reference="ref.png",
                  boxes=[Box(*b, label="scratch") for b in boxes])


def ans_yes(*boxes):
    body = ", ".join(f"{{'bbox_2d': [{b[0]}, {b[1]}, {b[2]}, {b[3]}], 'label': 'x'}}" for b in boxes)
    return f"<think>...</think><answer>Yes. {body}</answer>"


NO = "<think>...</think><answer>No.</answer>"

GT_A1 = [(10, 10, 30, 30)]
GT_A2 = [(10, 10, 30, 30), (60, 60, 90, 90)]


def test_iou_by_hand():
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching, x2 exclusive
    assert iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # degenerate


def test_perfect_answers_give_100_everywhere():
    samples = [sample("a1", boxes=GT_A1), sample("a2", boxes=GT_A2), sample("n1")]
    preds = [Prediction("a1", ans_yes(*GT_A1)), Prediction("a2", ans_yes(*GT_A2)), Prediction("n1", NO)]
    rep = score_predictions(samples, preds)
    s = rep.subdatasets["S"]
    assert s.det == {"accuracy": 1.0, "recall": 1.0, "precision": 1.0}
    assert s.loc == {"accuracy": 1.0, "recall": 1.0, "precision": 1.0}
    assert s.cell("accuracy") == "100.0/100.0"
    assert s.invalid == 0


def test_yes_without_boxes_everywhere():
    samples = [sample("a1", boxes=GT_A1), sample("a2", boxes=GT_A2), sample("n1"), sample("n2")]
    preds = [Prediction(s.id, "<answer>Yes.</answer>") for s in samples]
    s = score_predictions(samples, preds).subdatasets["S"]
    assert s.det["recall"] == 1.0
    assert s.det["precision"] == 0.5
    assert s.det["accuracy"] == 0.5
    assert s.loc == {"accuracy": 0.0, "recall": 0.0, "precision": 0.0}
    assert "loc.precision" in s.categories[0].flags  # 0/0 is flagged, not hidden
    assert s.categories[0].loc_counts == Counts(tp=0, fp=0, fn=3)


def test_boxes_on_normal_images_are_localization_false_positives():
    samples = [sample("a1", boxes=GT_A1), sample("n1")]
    preds = [Prediction("a1", ans_yes(*GT_A1)), Prediction("n1", ans_yes((0, 0, 10, 10), (50, 50, 60, 60)))]
    c = score_predictions(samples, preds).subdatasets["S"].categories[0]
    assert c.loc_counts == Counts(tp=1, fp=2, fn=0)
    assert c.loc["precision"] == pytest.approx(1 / 3)
    assert c.loc["accuracy"] == pytest.approx(1 / 3)
    assert c.loc["recall"] == 1.0
    assert c.det_counts == Counts(tp=1, fp=1)


def test_one_big_box_over_two_ground_truths_matches_only_one():
    gts = [(10, 10, 20, 20), (22, 10, 32, 20)]
    big = (10, 10, 32, 20)  # IoU with each gt = 100/220 > 0.1
    assert localization_counts([big], gts) == Counts(tp=1, fp=0, fn=1)


def test_iou_threshold_is_inclusive_at_point_one():
    gt = [(0, 0, 10, 10)]
    # pred area 10, overlap 10 -> IoU = 10 / (100 + 10 - 10) = 0.1 exactly
    assert localization_counts([(0, 0, 10, 1)], gt) == Counts(tp=1)
    # slightly smaller overlap -> no match: one FP and one FN
    assert localization_counts([(0, 0, 9.9, 1)], gt) == Counts(fp=1, fn=1)


def test_greedy_matching_takes_highest_iou_first():
    gts = [(0, 0, 10, 10), (8, 0, 18, 10)]
    preds = [(1, 0, 11, 10), (0, 0, 10, 10)]
    # pred1 == gt0 (IoU 1.0) is taken first; pred0 then matches gt1 (IoU 3/17 >= 0.1)
    m = match_boxes(preds, gts, 0.1)
    assert sorted((p, g) for p, g, _ in m) == [(0, 1), (1, 0)]


def test_each_box_used_once():
    assert localization_counts([(0, 0, 10, 10)] * 3, [(0, 0, 10, 10)]) == Counts(tp=1, fp=2, fn=0)


def test_macro_average_over_categories_by_hand():
    samples = [
        sample("a1", "c1", boxes=GT_A1), sample("a2", "c1", boxes=GT_A2), sample("n1", "c1"), sample("n2", "c1"),
        sample("b1", "c2", boxes=GT_A1), sample("m1", "c2"),
    ]
    preds = [
        Prediction("a1", ans_yes(*GT_A1)),                          # det TP, loc TP
        Prediction("a2", ans_yes(GT_A2[0], (40, 0, 50, 5))),        # det TP, loc TP + FP + FN
        Prediction("n1", NO),                                       # det TN
        Prediction("n2", ans_yes((0, 0, 5, 5))),                    # det FP, loc FP
        Prediction("b1", NO),                                       # det FN, loc FN
        Prediction("m1", "\u0000\u0001 garbage"),                   # invalid on a normal image: det FP
    ]
    s = score_predictions(samples, preds).subdatasets["S"]
    c1, c2 = s.categories
    assert c1.det == pytest.approx({"accuracy": 0.75, "recall": 1.0, "precision": 2 / 3})
    assert c1.loc == pytest.approx({"accuracy": 0.4, "recall": 2 / 3, "precision": 0.5})
    assert c2.det == {"accuracy": 0.0, "recall": 0.0, "precision": 0.0}
    assert c2.loc == {"accuracy": 0.0, "recall": 0.0, "precision": 0.0}
    assert c2.invalid == 1 and c2.det_counts == Counts(fp=1, fn=1)
    assert s.det == pytest.approx({"accuracy": 0.375, "recall": 0.5, "precision": 1 / 3})
    assert s.loc == pytest.approx({"accuracy": 0.2, "recall": 1 / 3, "precision": 0.25})
    assert s.cell("accuracy") == "37.5/20.0"
    assert s.cell("precision") == "33.3/25.0"


def test_invalid_answer_is_wrong_on_both_labels():
    samples = [sample("a1", boxes=GT_A1), sample("n1")]
    s = score_predictions(samples, [Prediction("a1", "hmm"), Prediction("n1", None, status="error")]).subdatasets["S"]
    assert s.categories[0].det_counts == Counts(fp=1, fn=1)
    assert s.invalid == 2


def test_missing_predictions_count_as_invalid_not_dropped():
    samples = [sample("a1", boxes=GT_A1), sample("n1")]
    s = score_predictions(samples, [Prediction("n1", NO)]).subdatasets["S"]
    assert s.missing == 1 and s.invalid == 1
    assert s.det["accuracy"] == 0.5
    assert s.categories[0].loc_counts == Counts(fn=1)


def test_predictions_for_unknown_ids_are_ignored():
    samples = [sample("n1")]
    s = score_predictions(samples, [Prediction("n1", NO), Prediction("zzz", ans_yes((0, 0, 5, 5)))]).subdatasets["S"]
    assert s.det["accuracy"] == 1.0


def test_boxes_mapped_from_recorded_convention_and_sent_size():
    # original 400x200; sent resized to 200x100; model answers in pixels of the sent image
    s = sample("a1", boxes=[(100, 50, 200, 100)], w=400, h=200)
    pred = Prediction("a1", ans_yes((50, 25, 100, 50)), image_sizes=[[200, 100], [200, 100]], convention="pixel")
    assert score_predictions([s], [pred]).subdatasets["S"].loc["accuracy"] == 1.0
    # the same numbers read as original pixels would miss
    pred_raw = Prediction("a1", ans_yes((50, 25, 100, 50)))
    assert score_predictions([s], [pred_raw]).subdatasets["S"].loc["accuracy"] == 0.0
    # gemini's [ymin, xmin, ymax, xmax] in 0-1000
    pred_g = Prediction("a1", ans_yes((250, 250, 500, 500)), convention="gemini")
    assert score_predictions([s], [pred_g]).subdatasets["S"].loc["accuracy"] == 1.0


def test_detector_predictions_need_threshold_and_use_its_boxes():
    from mmrbench.errors import MMRBenchError
    samples = [sample("a1", boxes=GT_A1), sample("n1")]
    preds = [Prediction("a1", score=0.8, boxes_by_threshold={"0.5": [list(GT_A1[0])], "0.9": []}),
             Prediction("n1", score=0.3, boxes_by_threshold={"0.5": [], "0.9": []})]
    with pytest.raises(MMRBenchError, match="threshold"):
        score_predictions(samples, preds)
    s = score_predictions(samples, preds, threshold=0.5).subdatasets["S"]
    assert s.det["accuracy"] == 1.0 and s.loc["accuracy"] == 1.0
    s = score_predictions(samples, preds, threshold=0.9).subdatasets["S"]
    assert s.det["accuracy"] == 0.5 and s.loc["accuracy"] == 0.0


def test_metric_functions_zero_denominators_are_zero_and_flagged():
    flags = []
    assert detection_metrics(Counts(), flags) == {"accuracy": 0.0, "recall": 0.0, "precision": 0.0}
    assert flags == ["det.accuracy", "det.recall", "det.precision"]
    assert localization_metrics(Counts(tp=2, fp=1, fn=1)) == {"accuracy": 0.5, "recall": 2 / 3, "precision": 2 / 3}


def test_subdatasets_are_scored_separately():
    samples = [sample("a1", sub="A", boxes=GT_A1), sample("n1", sub="B")]
    rep = score_decisions(samples, {"a1": Decision(True, (GT_A1[0],)), "n1": Decision(True)})
    assert rep.subdatasets["A"].det["accuracy"] == 1.0
    assert rep.subdatasets["B"].det["accuracy"] == 0.0
    assert [r["subdataset"] for r in rep.rows()] == ["A", "B"]
