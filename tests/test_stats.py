"""Bootstrap CIs and paired tests: hand-computed cases, agreement with the scorer, determinism."""
import numpy as np
import pytest

from lb_fixtures import make_benchmark, make_run, responses
from mmrbench.cli import main
from mmrbench.data.schema import Box, Sample
from mmrbench.leaderboard.stats import (_resampled_sums, bootstrap_ci, macro, mcnemar_exact, paired_compare,
                                        per_image_counts)
from mmrbench.predictions import Prediction
from mmrbench.scoring import score_predictions


def s(sid, cat, boxes=()):
    return Sample(id=sid, subdataset="S", category=cat, split="test", image="q.png", label="anomalous" if boxes else "normal",
                  width=100, height=100, reference="r.png", boxes=[Box(*b) for b in boxes])


YES = "<answer>Yes. [10, 10, 30, 30]</answer>"
NO = "<answer>No.</answer>"


def test_point_estimate_equals_the_scorer(tmp_path):
    man, samples = make_benchmark(tmp_path / "b")
    texts = responses(samples, 1)
    preds = [Prediction(x.id, texts[x.id]) for x in samples]
    per = per_image_counts(samples, preds)
    rep = score_predictions(samples, preds)
    for sub, p in per.items():
        m = macro(p)
        for part in ("det", "loc"):
            for k, v in getattr(rep.subdatasets[sub], part).items():
                assert float(m[part][k]) == pytest.approx(v, abs=1e-12)


def test_resampled_sums_match_a_loop():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 3, size=(7, 4))
    idx = rng.integers(0, 7, size=(13, 7))
    expect = np.stack([arr[row].sum(axis=0) for row in idx])
    assert np.array_equal(_resampled_sums(arr, idx), expect)


def test_hand_computed_bootstrap_distribution():
    """One category, two normal images, one answered right, one wrong: a resample of 2 images has
    accuracy 0, 1/2 or 1 with probability 1/4, 1/2, 1/4 -> 95% interval [0, 1], mean 1/2."""
    samples = [s("a", "c"), s("b", "c")]
    per = per_image_counts(samples, [Prediction("a", NO), Prediction("b", YES)])
    assert per["S"].det[0].tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]
    from mmrbench.leaderboard.stats import draw_indices

    boot = macro(per["S"], draw_indices(per["S"], 4000, seed=3))["det"]["accuracy"]
    freq = {v: np.mean(boot == v) for v in (0.0, 0.5, 1.0)}
    assert freq[0.0] == pytest.approx(0.25, abs=0.03) and freq[0.5] == pytest.approx(0.5, abs=0.03)
    ci = bootstrap_ci(per, resamples=4000, seed=3)["S"]["det"]["accuracy"]
    assert (ci.value, ci.low, ci.high) == (0.5, 0.0, 1.0)


def test_identical_answers_give_a_degenerate_interval_and_resampling_stays_within_categories():
    samples = [s(f"a{i}", "c1", [(10, 10, 30, 30)]) for i in range(5)] + [s(f"n{i}", "c2") for i in range(5)]
    preds = [Prediction(x.id, YES if x.is_anomalous else NO) for x in samples]
    ci = bootstrap_ci(per_image_counts(samples, preds), resamples=200, seed=0)["S"]
    # c1 (all anomalous, all right) and c2 (all normal, all right): every resample is perfect
    assert (ci["det"]["accuracy"].low, ci["det"]["accuracy"].high) == (1.0, 1.0)
    # c2 has no gt and no predicted boxes: loc ratios are 0 there in every resample -> macro 0.5
    assert (ci["loc"]["recall"].value, ci["loc"]["recall"].low, ci["loc"]["recall"].high) == (0.5, 0.5, 0.5)


def test_seeded_and_deterministic(tmp_path):
    man, samples = make_benchmark(tmp_path / "b")
    texts = responses(samples, 2)
    per = per_image_counts(samples, [Prediction(x.id, texts[x.id]) for x in samples])
    a = bootstrap_ci(per, resamples=300, seed=7)
    b = bootstrap_ci(per, resamples=300, seed=7)
    c = bootstrap_ci(per, resamples=300, seed=8)
    assert a["VisA"]["det"]["accuracy"] == b["VisA"]["det"]["accuracy"]
    assert a["VisA"]["det"]["accuracy"] != c["VisA"]["det"]["accuracy"]
    for sub in a:
        for part in ("det", "loc"):
            for m, cc in a[sub][part].items():
                assert cc.low <= cc.value + 1e-12 and cc.value <= cc.high + 1e-12


def test_mcnemar_by_hand():
    a = np.array([False] * 6 + [True] * 4)
    b = np.array([True] * 6 + [True] * 4)
    n01, n10, p = mcnemar_exact(a, b)
    assert (n01, n10) == (0, 6) and p == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_exact(a, a)[2] == 1.0


def test_paired_identical_runs_have_zero_delta(tmp_path):
    man, samples = make_benchmark(tmp_path / "b")
    texts = responses(samples, 2)
    per = per_image_counts(samples, [Prediction(x.id, texts[x.id]) for x in samples])
    for r in paired_compare(per, per, resamples=200):
        assert (r.delta, r.low, r.high, r.p_bootstrap) == (0.0, 0.0, 0.0, 1.0)


def test_paired_clear_winner():
    samples = [s(f"a{i}", "c1", [(10, 10, 30, 30)]) for i in range(30)] + [s(f"n{i}", "c2") for i in range(30)]
    good = [Prediction(x.id, YES if x.is_anomalous else NO) for x in samples]
    bad = [Prediction(x.id, NO if x.is_anomalous else YES) for x in samples]
    rows = {(r.subdataset, r.part, r.metric): r for r in paired_compare(
        per_image_counts(samples, bad), per_image_counts(samples, good), resamples=500)}
    r = rows[("S", "det", "accuracy")]
    assert (r.a, r.b, r.delta) == (0.0, 1.0, 1.0) and r.low == 1.0 and r.p_bootstrap == 0.0
    assert r.extra == {"a_only_correct": 0, "b_only_correct": 60} and r.p_mcnemar < 1e-15


def test_compare_cli(tmp_path, capsys):
    man, samples = make_benchmark(tmp_path / "bench")
    a = make_run(tmp_path / "a", man, samples, name="A", skill=1)
    b = make_run(tmp_path / "b", man, samples, name="B", skill=3)
    assert main(["compare", str(a), str(b), "--manifest", str(man), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "A = A  B = B" in out and "p (McNemar)" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("VisA") and "det.accuracy" in ln]
    assert len(lines) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.jsonl").write_text(man.read_text().replace("candle", "candle2"))
    c = make_run(tmp_path / "c", other / "manifest.jsonl",
                 [x for x in samples], name="C")
    assert main(["compare", str(a), str(c), "--manifest", str(man)]) == 2
    assert "different manifests" in capsys.readouterr().err
