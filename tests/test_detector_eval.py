"""evaluate_detector end to end on a two-category slice of the small synthetic benchmark."""
import json
import shutil
from pathlib import Path

import pytest

from runner_data import copy_categories, copy_samples

from mmrbench.baselines.evaluate import evaluate_detector, split_holdout
from mmrbench.baselines.recipes import DEFAULTS, read_toml, recipe_path, resolve_recipe
from mmrbench.data.manifest import read_manifest
from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.predictions import read_predictions
from mmrbench.results import read_result
from mmrbench.scoring import score_predictions

CATS = {"carpet", "pill"}
FAST = {"model": {"image_size": 64, "blur_sigma": 1.0}, "boxes": {"min_area": 4}, "pixel_auroc_size": 32}


@pytest.fixture(scope="module")
def slice_manifest(synth_small, tmp_path_factory):
    """Copy two categories (files and manifest lines) so tests may modify them."""
    return copy_categories(synth_small, CATS, tmp_path_factory.mktemp("slice"))


@pytest.fixture(scope="module")
def padim_run(slice_manifest, tmp_path_factory):
    m = read_manifest(slice_manifest)
    out = tmp_path_factory.mktemp("padim_run")
    res = evaluate_detector("padim", m, m.select(split="test"), out, recipe={**FAST, "model": {**FAST["model"], "d": 40}},
                            progress=False)
    return m, out, res


def test_predictions_lines(padim_run):
    m, out, _ = padim_run
    preds = {p.id: p for p in read_predictions(out / "predictions.jsonl")}
    test = m.select(split="test")
    assert set(preds) == {s.id for s in test}
    keys = ["0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]
    for s in test:
        p = preds[s.id]
        assert p.response is None and p.status == "ok" and p.convention == "pixel"
        assert p.image_sizes == [[s.width, s.height]]
        assert 0.0 <= p.score <= 1.0
        assert sorted(p.boxes_by_threshold) == keys
        # threshold 0 covers the whole map: exactly the whole image
        assert p.boxes_by_threshold["0.0"] == [[0.0, 0.0, float(s.width), float(s.height)]]
        for boxes in p.boxes_by_threshold.values():
            for x1, y1, x2, y2 in boxes:
                assert 0 <= x1 < x2 <= s.width and 0 <= y1 < y2 <= s.height
    norm = padim_run[2].extra["detector"]["normalisation"]
    assert norm["mode"] == "joint"  # the default: image scores on the maps' min-max range
    for cat in CATS:
        (rng,) = [r for key, r in norm["ranges"].items() if key.endswith(f"/{cat}")]
        assert rng["score"] == rng["map"] and rng["map"][0] < rng["map"][1]
        sc = [preds[s.id].score for s in test if s.category == cat]
        # PaDiM's image score is its map's maximum: the category's top image is exactly the maps' top
        assert max(sc) == pytest.approx(1.0, abs=1e-6) and min(sc) >= 0.0


def test_result_oracle_fair_and_rescoring(padim_run):
    m, out, res = padim_run
    r = read_result(out / "result.json")
    det = r.extra["detector"]
    assert det["method"] == "padim"
    assert det["backbone"] == {"name": "resnet18", "pretrained": False, "seed": 0, "weights_sha256": None}
    assert "random-weight" in r.notes
    t = det["threshold_oracle"]
    # the oracle is the argmax of the recorded sweep of mean (det acc + loc acc)
    sweep = det["sweep"]
    best = max(sum(v["det"] + v["loc"] for v in subs.values()) / len(subs) for subs in sweep.values())
    key = f"{t:.1f}"
    assert sum(v["det"] + v["loc"] for v in sweep[key].values()) / len(sweep[key]) == pytest.approx(best)
    # anyone can re-score predictions.jsonl at the recorded thresholds and get the recorded metrics
    preds = read_predictions(out / "predictions.jsonl")
    test = m.select(split="test")
    assert score_predictions(test, preds, threshold=t).to_json() == r.metrics
    assert score_predictions(test, preds, threshold=det["threshold_fair"]).to_json() == det["metrics_fair"]
    assert 0.0 <= det["threshold_fair"] <= 1.0
    for sub, a in det["auroc"].items():
        assert 0.0 <= a["image"] <= 1.0 and 0.0 <= a["pixel"] <= 1.0
        assert set(a["categories"]) <= CATS
    # the leaderboard's strict schema accepts it, and its verifier re-scores it identically
    from mmrbench.leaderboard.schema import check_result
    from mmrbench.leaderboard.verify import compare_metrics, rescore
    raw = json.loads((out / "result.json").read_text())
    check_result(raw)
    assert compare_metrics(raw["metrics"], rescore(raw, m, preds)) == []


def test_cache_is_reused_and_identical(padim_run, tmp_path):
    m, out, _ = padim_run
    before = (out / "predictions.jsonl").read_bytes()
    cache = list((out / "cache").glob("padim-*.npz"))
    assert len(cache) == 2
    res2 = evaluate_detector("padim", m, m.select(split="test"), out,
                             recipe={**FAST, "model": {**FAST["model"], "d": 40}}, progress=False)
    assert res2.extra["detector"]["timing"]["cached_categories"] == 2
    assert res2.extra["detector"]["timing"]["fit_images"] == 0
    a = [(p.id, p.score, p.boxes_by_threshold) for p in read_predictions(out / "predictions.jsonl")]
    b = [(json.loads(l)["id"], json.loads(l)["score"], json.loads(l)["boxes_by_threshold"]) for l in before.decode().splitlines()]
    assert a == b
    # another recipe -> another cache entry
    evaluate_detector("padim", m, m.select(split="test", categories=["pill"]), tmp_path / "r",
                      recipe={**FAST, "model": {**FAST["model"], "d": 41}}, progress=False, cache_dir=out / "cache")
    assert len(list((out / "cache").glob("padim-*.npz"))) == 3


def test_patchcore_runs(slice_manifest, tmp_path):
    m = read_manifest(slice_manifest)
    test = m.select(split="test", categories=["carpet"])
    res = evaluate_detector("patchcore", m, test, tmp_path, recipe=FAST, progress=False)
    det = res.extra["detector"]
    assert det["method"] == "patchcore" and det["recipe"]["model"]["coreset_ratio"] == 0.1
    assert len(read_predictions(tmp_path / "predictions.jsonl")) == len(test)
    assert res.metrics["subdatasets"]


def test_missing_train_normals_named(slice_manifest, tmp_path):
    path = copy_samples(slice_manifest, lambda s: not (s.category == "pill" and s.split == "train"), tmp_path)
    m2 = read_manifest(path, check_files=False)
    with pytest.raises(MMRBenchError, match=r"subdataset 'SynVisA' category 'pill': no normal train images"):
        evaluate_detector("padim", m2, m2.select(split="test"), tmp_path / "out", recipe=FAST, progress=False)


def test_corrupt_image_named(slice_manifest, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(Path(slice_manifest).parent, root)
    m2 = read_manifest(root / "manifest.jsonl")
    bad = [s for s in m2.select(split="test", categories=["carpet"])][1]
    (root / bad.image).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(MMRBenchError, match=rf"cannot read image .*{Path(bad.image).name}.*sample '{bad.id}'"):
        evaluate_detector("padim", m2, m2.select(split="test", categories=["carpet"]), tmp_path / "out",
                          recipe=FAST, progress=False)


def test_recipe_files_match_defaults_and_bad_keys():
    for method in ("padim", "patchcore"):
        assert read_toml(recipe_path(method)) == DEFAULTS[method]
        assert resolve_recipe(method, None) == DEFAULTS[method]
    with pytest.raises(ConfigError, match="unknown key 'model.bogus'"):
        resolve_recipe("padim", {"model": {"bogus": 1}})
    with pytest.raises(ConfigError, match="recipe is for 'padim'"):
        resolve_recipe("patchcore", {"method": "padim"})
    with pytest.raises(ConfigError, match="unknown detector"):
        resolve_recipe("svm", None)
    r = resolve_recipe("patchcore", {"model": {"target_dim": 256}})
    assert r["model"]["target_dim"] == 256 and "coreset_max" not in r["model"]


def test_holdout_split_is_deterministic_and_keeps_two():
    from mmrbench.data.schema import Sample
    def mk(i):
        return Sample(id=f"a/{i:02d}", subdataset="S", category="c", split="train", image="x", label="normal",
                      width=8, height=8)
    items = [mk(i) for i in range(10)]
    fit, held = split_holdout(items, 0.2, 2, seed=0)
    assert len(held) == 2 and len(fit) == 8 and not {s.id for s in fit} & {s.id for s in held}
    assert split_holdout(list(reversed(items)), 0.2, 2, seed=0) == (fit, held)
    fit, held = split_holdout(items[:3], 0.2, 2, seed=0)
    assert held == [] and len(fit) == 3


def test_registry_detector_model():
    from mmrbench.adapters.base import Message, Request, TextPart
    from mmrbench.adapters.registry import instantiate as create_model
    dm = create_model("detector", "PatchCore", recipe=FAST)
    assert dm.method == "patchcore" and dm.recipe["model"]["image_size"] == 64
    assert dm.describe()["pretrained"] is False and dm.describe()["kind"] == "detector"
    out = dm.generate([Request(id="x", messages=[Message(role="user", content=[TextPart("hi")])])])
    assert out[0].status == "error" and "mmrbench eval --model patchcore" in out[0].error
    with pytest.raises(ConfigError, match="unknown key"):
        create_model("detector", "padim", recipe={"nope": 1})


def test_cli_eval_padim(slice_manifest, tmp_path):
    import subprocess
    import sys
    rec = tmp_path / "fast.toml"
    rec.write_text('method = "padim"\npixel_auroc_size = 32\n[model]\nimage_size = 64\nd = 32\nblur_sigma = 1.0\n'
                   '[boxes]\nmin_area = 4\n')
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mmrbench", "eval", "--model", "padim", "--data", str(slice_manifest),
                        "--out", str(out), "--recipe", str(rec), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["detector"]["recipe"]["model"]["d"] == 32
    assert res["model"]["provider"] == "detector"
    assert len(read_predictions(out / "predictions.jsonl")) == len(read_manifest(slice_manifest).select(split="test"))


def test_joint_normalisation_aligns_decision_and_boxes(padim_run, tmp_path):
    m, out, _ = padim_run
    rec = {**FAST, "model": {**FAST["model"], "d": 40}, "boxes": {"min_area": 0}, "normalisation": "joint"}
    res = evaluate_detector("padim", m, m.select(split="test"), tmp_path, recipe=rec, progress=False,
                            cache_dir=out / "cache")
    assert res.extra["detector"]["timing"]["cached_categories"] == 2  # normalisation is not part of the fit
    assert res.extra["detector"]["normalisation"]["mode"] == "joint"
    checked = 0
    for p in read_predictions(tmp_path / "predictions.jsonl"):
        for key, boxes in p.boxes_by_threshold.items():
            t = float(key)
            if abs(p.score - t) > 0.02:  # the bilinear resize to the original size can shave the peak
                assert (p.score >= t) == bool(boxes), (p.id, t, p.score)
                checked += 1
    assert checked > 100
    sep = evaluate_detector("padim", m, m.select(split="test"), tmp_path / "sep", recipe={**rec, "normalisation": "separate"},
                            progress=False, cache_dir=out / "cache")
    assert sep.extra["detector"]["normalisation"]["mode"] == "separate"
    sep_preds = read_predictions(tmp_path / "sep" / "predictions.jsonl")
    for cat in CATS:  # separate: image scores min-max over the category's own image scores
        sc = [p.score for p in sep_preds if f"/{cat}/" in p.id]
        assert sc and min(sc) == 0.0 and max(sc) == 1.0
    # a bad value fails when the recipe is resolved, before an earlier run's predictions are touched
    before = (tmp_path / "predictions.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="normalisation"):
        evaluate_detector("padim", m, m.select(split="test"), tmp_path, recipe={"normalisation": "zscore"},
                          progress=False)
    assert (tmp_path / "predictions.jsonl").read_bytes() == before
    with pytest.raises(ConfigError, match="coreset_precision"):
        evaluate_detector("patchcore", m, m.select(split="test"), tmp_path, recipe={"model": {"coreset_precision": "double"}},
                          progress=False)
