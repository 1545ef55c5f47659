"""GAD view: source x model matrix of det/loc accuracy, intervals from the leaderboard's bootstrap."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from lb_fixtures import edit_json, make_benchmark, make_run  # noqa: E402

from mmrbench.cli import main  # noqa: E402
from mmrbench.errors import MMRBenchError  # noqa: E402
from mmrbench.gad import gad_matrix, render  # noqa: E402
from mmrbench.leaderboard.stats import bootstrap_ci, per_image_counts  # noqa: E402
from mmrbench.predictions import read_predictions  # noqa: E402


def test_matrix_values_and_intervals(tmp_path):
    man, samples = make_benchmark(tmp_path / "bench")
    mv = [s for s in samples if s.subdataset == "MVTecAD"]
    va = [s for s in samples if s.subdataset == "VisA"]
    # model A: one run per held-out source (leave-one-source-out style); model B: one run on both
    make_run(tmp_path / "runs" / "A-mvtec", man, mv, name="A", skill=1)
    make_run(tmp_path / "runs" / "A-visa", man, va, name="A", skill=1)
    b = make_run(tmp_path / "runs" / "B", man, samples, name="B", skill=3)
    mat = gad_matrix([tmp_path / "runs"], manifest_stores=[tmp_path / "bench"], resamples=300)
    assert mat.sources == ["MVTecAD", "VisA"] and sorted(mat.models) == ["A", "B"]
    res_b = json.loads((b / "result.json").read_text())
    cell = mat.cells[("VisA", "B")]
    assert cell.det == res_b["metrics"]["subdatasets"]["VisA"]["det"]["accuracy"]
    assert cell.loc == res_b["metrics"]["subdatasets"]["VisA"]["loc"]["accuracy"]
    preds = read_predictions(b / "predictions.jsonl")
    ci = bootstrap_ci(per_image_counts(samples, preds), resamples=300, seed=0)
    assert cell.det_ci == (ci["VisA"]["det"]["accuracy"].low, ci["VisA"]["det"]["accuracy"].high)
    assert cell.loc_ci == (ci["VisA"]["loc"]["accuracy"].low, ci["VisA"]["loc"]["accuracy"].high)
    assert cell.det_ci[0] <= cell.det <= cell.det_ci[1]
    assert mat.cells[("MVTecAD", "A")].run.endswith("A-mvtec") and not mat.notes
    text = render(mat)
    assert text.splitlines()[0].split() == ["source", "A", "B"]
    assert f"{100 * cell.det:.1f} [{100 * cell.det_ci[0]:.1f}, {100 * cell.det_ci[1]:.1f}]" in text


def test_bare_results_seen_sources_and_duplicates(tmp_path):
    man, samples = make_benchmark(tmp_path / "bench")
    a = make_run(tmp_path / "a", man, samples, name="A", skill=2)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(a / "result.json", bare / "result.json")
    edit_json(bare / "result.json", lambda d: (d["model"].update(name="Bare"),
                                               d["dataset"].update(train_subdatasets=["VisA"])))
    mat = gad_matrix([bare / "result.json"], resamples=100)
    assert mat.cells[("VisA", "Bare")].det_ci is None and mat.cells[("VisA", "Bare")].seen
    assert not mat.cells[("MVTecAD", "Bare")].seen
    assert "no interval (no predictions file)" in mat.notes[0]
    assert "* the model trained on this source" in render(mat)
    assert len(gad_matrix([a, a / "result.json"], manifest=man).models) == 1  # one run given twice
    shutil.copytree(a, tmp_path / "a2")
    with pytest.raises(MMRBenchError, match="'A' on MVTecAD also in"):
        gad_matrix([a, tmp_path / "a2"], manifest=man)
    assert gad_matrix([a, tmp_path / "a2"], label="run", manifest=man).models == ["a", "a2"]


def test_gad_cli(tmp_path, capsys):
    man, samples = make_benchmark(tmp_path / "bench")
    make_run(tmp_path / "runs" / "x", man, samples, name="X", skill=2)
    assert main(["gad", str(tmp_path / "runs"), "--manifest", str(man), "--resamples", "100", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sources"] == ["MVTecAD", "VisA"] and len(d["cells"]) == 2 and d["cells"][0]["det_ci"] is not None
    assert main(["gad", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
