"""The README's main job (`mmrbench bundled`) end to end, on the small synthetic benchmark."""
import json
import shutil

from mmrbench.cli import main
from mmrbench.data.synth import SYNTH_VERSION


def test_bundled_main_job(synth_small, tmp_path, capsys):
    out = tmp_path / "bundled"
    shutil.copytree(synth_small.parent, out / "data")  # same seed and scale: reused, not regenerated
    rc = main(["bundled", "--out", str(out), "--scale", "small", "--models", "padim", "--limit", "12",
               "--resamples", "20", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed
    result = json.loads((out / "runs" / "padim" / "result.json").read_text())
    assert result["provenance"] == "run"
    assert set(result["metrics"]["subdatasets"]) <= {"SynMVTecAD", "SynVisA", "SynMVTec3D", "SynMPDD"}
    md = (out / "leaderboard" / "LEADERBOARD.md").read_text()
    assert "✅ verified" in md  # the run was re-scored from its predictions
    assert "📄 reported" in md  # the paper's rows, on their own board
    sections = {sec.split("\n", 1)[0]: sec for sec in md.split("\n## ")[1:]}
    paper = sections["MMR-AD test (paper)"]
    synth = next(v for k, v in sections.items() if k.startswith("bundled synthetic v"))
    assert "✅ verified" not in paper and "✅ verified" in synth and "📄 reported" not in synth
    page = (out / "leaderboard" / "index.html").read_text()
    data = json.loads(page.split('id="lb-data">', 1)[1].split("</script>", 1)[0])
    assert [b["name"] for b in data["benchmarks"]][0] == "MMR-AD test (paper)"
    assert [b["name"].split(" (m")[0] for b in data["benchmarks"]][1:] == [
        "MMAD (published)", f"bundled synthetic v{SYNTH_VERSION}", f"bundled synthetic v{SYNTH_VERSION}, MMAD format"]
    by_key = {b["key"]: b for b in data["benchmarks"]}
    for e in data["entries"]:  # no synthetic run on the paper's board, and no MMR-AD row on an MMAD board
        b = by_key[e["benchmark"]]
        assert (e["benchmark"] == "mmr-ad-paper") == (e["provenance"] == "reported" and "mmad" not in e)
        assert (b.get("kind") == "mmad") == ("mmad" in e)
    mmad_synth = next(b for b in data["benchmarks"] if b["name"].startswith(f"bundled synthetic v{SYNTH_VERSION}, MMAD"))
    chance = [e for e in data["entries"] if e["benchmark"] == mmad_synth["key"]]
    assert [(e["name"], e["status"], e["kind"]) for e in chance] == [
        ("Chance level (uniform option letter, seed 0)", "verified", "baseline")]
    assert mmad_synth["columns"] == ["Anomaly Detection", "Defect Classification", "Defect Localization",
                                     "Object Classification", "Average"]
    assert len([e for e in data["entries"] if e["benchmark"] == "mmad-published"]) == 22
    # Markdown: the MMAD sections hold only MMAD rows, the MMR-AD sections none
    mm = sections["MMAD (published)"]
    mini = next(v for k, v in sections.items() if k.startswith(f"bundled synthetic v{SYNTH_VERSION}, MMAD"))
    assert "PaDiM" not in mm + mini and "Anomaly-R1" not in mm + mini and "Chance level" in mini
    assert "Chance level" not in paper + synth and "mmad-compatible" not in paper + synth
    assert "✅ verified" in mini and "📄 reported" in mm
    # the page: the MMAD boards' charts have one bar per model row, none of an MMR-AD row
    for b, n in ((by_key["mmad-published"], 22), (mmad_synth, 1)):
        charts = page.split(f'<section class="bench-charts" data-benchmark="{b["key"]}"', 1)[1].split("</section>", 1)[0]
        assert charts.count('<g class="mark') == n * len(b["columns"]) and "PaDiM" not in charts
    assert (out / "runs" / "mmad-chance-level" / "result.json").is_file()
    assert (out / "leaderboard" / "index.html").stat().st_size > 1000
    assert any((out / "results").glob("padim-*/result.json"))


def test_bundled_bad_model_fails_cleanly(synth_small, tmp_path, capsys):
    out = tmp_path / "bundled"
    shutil.copytree(synth_small.parent, out / "data")
    rc = main(["bundled", "--out", str(out), "--scale", "small", "--models", "padim,nosuchprovider:x",
               "--resamples", "0", "--no-progress"])
    assert rc == 2
    captured = capsys.readouterr()
    assert "unknown model 'nosuchprovider:x'" in captured.err
    assert "Traceback" not in captured.err
    assert not (out / "runs").exists()  # specs are checked before any model runs


def test_bundled_bad_mmad_model_fails_before_any_run(synth_small, tmp_path, capsys):
    out = tmp_path / "bundled"
    shutil.copytree(synth_small.parent, out / "data")
    rc = main(["bundled", "--out", str(out), "--scale", "small", "--models", "padim",
               "--mmad-models", "chance,nosuchprovider:y", "--resamples", "0", "--no-progress"])
    assert rc == 2
    assert "unknown model 'nosuchprovider:y'" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_default_models_include_the_reference_entry_unless_its_extra_is_missing(monkeypatch, capsys):
    import importlib.util

    from mmrbench.commands import bundled

    assert bundled.DEFAULT_MODELS.split(",") == ["patchcore", "padim", "anomaly-r1-mini"]
    assert not bundled._missing_extra("anomaly-r1-mini") or importlib.util.find_spec("transformers") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    assert bundled._missing_extra("anomaly-r1-mini") and not bundled._missing_extra("padim")
    assert "pip install -e '.[hf]'" in capsys.readouterr().out


def test_bundled_reference_entry_is_a_verified_row(synth_small, tmp_path, capsys):
    """Anomaly-R1-mini, the shipped checkpoint, evaluated by `mmrbench bundled` through its card and
    re-scored on submission like any run: a verified row on the synthetic board."""
    import pytest
    pytest.importorskip("transformers")
    out = tmp_path / "bundled"
    shutil.copytree(synth_small.parent, out / "data")
    rc = main(["bundled", "--out", str(out), "--scale", "small", "--models", "anomaly-r1-mini", "--limit", "8",
               "--mmad-models", "", "--resamples", "0", "--no-progress"])
    assert rc == 0
    result = json.loads((out / "runs" / "anomaly-r1-mini" / "result.json").read_text())
    assert result["provenance"] == "run" and result["model"]["model_id"] == "../baselines/anomaly-r1-mini/model"
    md = (out / "leaderboard" / "LEADERBOARD.md").read_text()
    synth = next(sec for sec in md.split("\n## ")[1:] if sec.startswith("bundled synthetic v"))
    row = next(line for line in synth.splitlines() if line.startswith("| anomaly-r1-mini "))
    assert "✅ verified" in row
