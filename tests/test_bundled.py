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


def test_default_reference_entry_is_left_out_without_its_extra_but_named_it_fails(synth_small, tmp_path, capsys,
                                                                                 monkeypatch):
    """Without the hf extra (transformers not importable), the default job still runs PatchCore and PaDiM
    and says why Anomaly-R1-mini is missing; asked for by name, the same model is a failure (exit 2)."""
    import sys

    from mmrbench.commands.bundled import DEFAULT_MODELS
    assert DEFAULT_MODELS.split(",") == ["patchcore", "padim", "anomaly-r1-mini"]
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    out = tmp_path / "bundled"
    shutil.copytree(synth_small.parent, out / "data")
    common = ["--out", str(out), "--scale", "small", "--limit", "4", "--mmad-models", "", "--resamples", "0",
              "--no-progress"]
    assert main(["bundled", *common]) == 0
    printed = capsys.readouterr().out
    assert "anomaly-r1-mini: left out" in printed and "pip install 'mmrbench[hf]'" in printed
    assert (out / "runs" / "patchcore" / "result.json").is_file() and (out / "runs" / "padim" / "result.json").is_file()
    assert not (out / "runs" / "anomaly-r1-mini").exists()  # known before a run folder was made

    assert main(["bundled", "--models", "padim,anomaly-r1-mini", *common]) == 2
    captured = capsys.readouterr()
    assert "anomaly-r1-mini: failed" in captured.out and "some models failed" in captured.err


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
    row = next(line for line in synth.splitlines() if line.startswith("| Anomaly-R1-mini (1M, CPU) "))  # its display name
    assert "✅ verified" in row
