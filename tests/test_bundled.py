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
    assert [b["name"].split(" (manifest")[0] for b in data["benchmarks"]][1:] == [f"bundled synthetic v{SYNTH_VERSION}"]
    for e in data["entries"]:  # no synthetic run on the paper's board, on the page either
        assert (e["benchmark"] == "mmr-ad-paper") == (e["provenance"] == "reported")
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
