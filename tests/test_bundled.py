"""The README's main job (`mmrbench bundled`) end to end, on the small synthetic benchmark."""
import json
import shutil

from mmrbench.cli import main


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
    assert "📄 reported" in md  # next to the paper's rows
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
