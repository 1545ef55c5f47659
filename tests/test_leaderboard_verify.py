"""Tampered submissions are rejected or left unverified, with the reason shown."""
import gzip
import json

import pytest

from lb_fixtures import edit_json, make_benchmark, make_run
from mmrbench.cli import main
from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.board import build_board
from mmrbench.leaderboard.submit import canonical_name, submit_run
from mmrbench.leaderboard.verify import rescore, verify_run_dir
from mmrbench.data.manifest import read_manifest
from mmrbench.predictions import Prediction


@pytest.fixture()
def bench(tmp_path):
    return make_benchmark(tmp_path / "bench")


def test_untouched_run_verifies(tmp_path, bench):
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    _, v = verify_run_dir(rd, manifest_stores=[tmp_path / "bench"])
    assert v.status == "verified" and v.reasons == []
    assert v.recomputed["subdatasets"]["VisA"]["det"] == json.loads((rd / "result.json").read_text())[
        "metrics"]["subdatasets"]["VisA"]["det"]


def test_metrics_edited(tmp_path, bench):
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["MVTecAD"]["loc"].update(recall=0.95))
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified"
    assert len(v.reasons) == 1 and v.reasons[0].startswith("metrics edited: MVTecAD loc.recall claimed 0.950000")


def test_tiny_metric_drift_is_caught(tmp_path, bench):
    """Tolerance is 1e-9: even a rounding-sized edit fails."""
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["VisA"]["det"].update(
        accuracy=d["metrics"]["subdatasets"]["VisA"]["det"]["accuracy"] + 1e-6))
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified" and "VisA det.accuracy" in v.reasons[0]


def test_category_row_edited(tmp_path, bench):
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["MVTecAD"]["categories"][1]["det"].update(recall=1.0))
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified" and "MVTecAD/screw det.recall" in v.reasons[0]


def test_predictions_edited(tmp_path, bench):
    """Changing one answer changes both the hash and the metrics: both reasons are shown."""
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples, skill=1)
    lines = (rd / "predictions.jsonl").read_text().splitlines()
    d = json.loads(lines[0])
    d["response"] = "<answer>Yes. {'bbox_2d': [4, 6, 16, 18], 'label': 'scratch'}</answer>"
    lines[0] = json.dumps(d)
    (rd / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified"
    assert any(r.startswith("predictions edited: predictions.jsonl hashes to") for r in v.reasons)


def test_predictions_edited_and_hash_updated_still_fails_on_metrics(tmp_path, bench):
    from mmrbench.data.manifest import file_sha256

    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples, skill=1)
    text = (rd / "predictions.jsonl").read_text().replace("<answer>No.</answer>", "<answer>Yes. [4, 6, 16, 18]</answer>", 1)
    (rd / "predictions.jsonl").write_text(text)
    edit_json(rd / "result.json", lambda d: d.update(predictions_sha256=file_sha256(rd / "predictions.jsonl")))
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified" and v.reasons[0].startswith("metrics edited")


def test_manifest_hash_mismatch(tmp_path, bench):
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    other = tmp_path / "other.jsonl"
    other.write_text(man.read_text().replace('"bottle"', '"bottle2"'))
    _, v = verify_run_dir(rd, manifest=other)
    assert v.status == "unverified"
    assert any(r.startswith("manifest hash mismatch: other.jsonl hashes to") for r in v.reasons)
    edit_json(rd / "result.json", lambda d: d["dataset"].update(manifest_sha256="0" * 64))
    _, v = verify_run_dir(rd, manifest_stores=[tmp_path / "bench"])
    assert v.status == "unverified" and v.reasons[0].startswith("manifest not found: no manifest with sha256 000000000000")


def test_missing_predictions(tmp_path, bench):
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    (rd / "predictions.jsonl").unlink()
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified" and v.reasons == ["missing predictions: no predictions.jsonl to re-score"]


def test_hostile_predictions_are_data_not_code(tmp_path, bench):
    """A response that is Python code is parsed as text; NaN scores and oversized lines are refused."""
    man, samples = bench
    texts = {s.id: "__import__('os').system('touch PWNED')" for s in samples}
    rd = make_run(tmp_path / "run", man, samples, texts=texts)
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "verified"  # re-scored as invalid answers, consistently
    assert not (tmp_path / "PWNED").exists()
    (rd / "predictions.jsonl").write_text('{"id": "x", "response": null, "score": NaN}\n')
    _, v = verify_run_dir(rd, manifest=man)
    assert v.status == "unverified" and "unreadable predictions" in v.reasons[0] and "NaN" in v.reasons[0]


def test_detector_results_rescore_at_the_oracle_threshold(tmp_path, bench):
    man, samples = bench
    manifest = read_manifest(man, check_files=False)
    preds = []
    for k, s in enumerate(samples):
        score = 0.8 if s.is_anomalous == (k % 3 != 0) else 0.2
        boxes = {"0.5": [[b.x1, b.y1, b.x2, b.y2] for b in s.boxes] or [[0, 0, 5, 5]], "0.7": []}
        preds.append(Prediction(id=s.id, score=score, boxes_by_threshold=boxes))
    result = {"dataset": {"split": "test", "subdatasets": ["MVTecAD", "VisA"]}, "metrics": {},
              "detector": {"threshold_oracle": 0.5}}
    r05 = rescore(result, manifest, preds)
    result["detector"]["threshold_oracle"] = {"MVTecAD": 0.5, "VisA": 0.7}
    mixed = rescore(result, manifest, preds)
    assert mixed["subdatasets"]["MVTecAD"] == r05["subdatasets"]["MVTecAD"]
    assert mixed["subdatasets"]["VisA"]["loc"]["recall"] == 0.0 < r05["subdatasets"]["VisA"]["loc"]["recall"]
    # per-category oracle thresholds: the most specific key wins
    result["detector"]["threshold_oracle"] = {"MVTecAD": 0.5, "MVTecAD/screw": 0.7, "VisA": 0.5}
    per_cat = rescore(result, manifest, preds)
    cats = {c["category"]: c for c in per_cat["subdatasets"]["MVTecAD"]["categories"]}
    cats05 = {c["category"]: c for c in r05["subdatasets"]["MVTecAD"]["categories"]}
    assert cats["bottle"] == cats05["bottle"] and cats["screw"]["loc"]["recall"] == 0.0
    assert per_cat["subdatasets"]["VisA"] == r05["subdatasets"]["VisA"]


def test_submit_stores_verified_run_and_rejects_tampered(tmp_path, bench):
    man, samples = bench
    results = tmp_path / "results"
    rd = make_run(tmp_path / "run", man, samples, name="Tiny Model/v2", variant="no_reference")
    dest, v = submit_run(rd, results_dir=results, manifest=man)
    assert v.status == "verified"
    res = json.loads((rd / "result.json").read_text())
    assert dest.name == canonical_name(res) == f"tiny-model-v2-{res['dataset']['manifest_sha256'][:8]}-no-reference"
    assert (dest / "result.json").read_bytes() == (rd / "result.json").read_bytes()
    assert gzip.decompress((dest / "predictions.jsonl.gz").read_bytes()) == (rd / "predictions.jsonl").read_bytes()
    # the stored entry verifies from its gzipped predictions
    _, v2 = verify_run_dir(dest, manifest=man)
    assert v2.status == "verified"

    bad = make_run(tmp_path / "bad", man, samples, name="cheater", skill=1)
    edit_json(bad / "result.json", lambda d: d["metrics"]["subdatasets"]["VisA"]["det"].update(accuracy=1.0))
    with pytest.raises(MMRBenchError, match="submission rejected .*metrics edited: VisA det.accuracy claimed 1.000000"):
        submit_run(bad, results_dir=results, manifest=man)
    assert not any("cheater" in p.name for p in results.iterdir())
    dest_bad, vb = submit_run(bad, results_dir=results, manifest=man, allow_unverified=True)
    assert vb.status == "unverified"
    board = build_board(results, manifest_stores=[tmp_path / "bench"], resamples=50)
    status = {e["name"]: (e["status"], e["reasons"]) for e in board.entries}
    assert status["Tiny Model/v2"] == ("verified", [])
    assert status["cheater"][0] == "unverified" and "metrics edited" in status["cheater"][1][0]


def test_submit_cli_rebuilds_the_board(tmp_path, bench, capsys):
    man, samples = bench
    rd = make_run(tmp_path / "run", man, samples)
    results, out = tmp_path / "results", tmp_path / "lb"
    assert main(["submit", str(rd), "--results", str(results), "--out", str(out), "--manifest", str(man),
                 "--resamples", "50"]) == 0
    assert "verified: stored as" in capsys.readouterr().out
    md = (out / "LEADERBOARD.md").read_text()
    assert "tiny-model" in md and "✅ verified" in md and (out / "index.html").is_file()
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["VisA"]["loc"].update(precision=0.0))
    assert main(["submit", str(rd), "--results", str(results), "--out", str(out), "--manifest", str(man)]) == 2
    assert "submission rejected" in capsys.readouterr().err
