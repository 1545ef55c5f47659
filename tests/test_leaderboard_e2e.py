"""End to end with the real harness: `mmrbench eval` (scripted provider) on the bundled synthetic
benchmark -> `mmrbench submit` -> verified entry on the board -> `mmrbench compare`."""
import json

from lb_fixtures import responses
from mmrbench.cli import main
from mmrbench.data.manifest import read_manifest


def _eval(tmp_path, manifest, name, skill, extra=()):
    samples = read_manifest(manifest, check_files=False).select(split="test")
    answers = tmp_path / f"{name}.jsonl"
    texts = responses(samples, skill)
    answers.write_text("".join(json.dumps({"id": s.id, "response": texts[s.id]}) + "\n" for s in samples))
    out = tmp_path / name
    assert main(["eval", "--model", f"scripted:{answers}", "--data", str(manifest), "--out", str(out),
                 "--no-progress", *extra]) == 0
    return out


def test_eval_submit_build_compare(tmp_path, synth_small, capsys):
    a = _eval(tmp_path, synth_small, "run-a", skill=1)
    b = _eval(tmp_path, synth_small, "run-b", skill=3, extra=["--limit", "40"])
    results, lb = tmp_path / "results", tmp_path / "lb"
    for run in (a, b):
        assert main(["submit", str(run), "--results", str(results), "--out", str(lb),
                     "--manifest", str(synth_small), "--resamples", "100"]) == 0
    out = capsys.readouterr().out
    assert out.count("verified: stored as") == 2
    md = (lb / "LEADERBOARD.md").read_text()
    assert md.count("| ✅ verified |") == 2 and "95% bootstrap confidence intervals" in md
    html = (lb / "index.html").read_text()
    assert 'id="lb-data"' in html and "data:image/jpeg;base64," in html
    # compare needs the same samples: the limited run covers fewer, so compare A with itself re-run
    a2 = _eval(tmp_path, synth_small, "run-a2", skill=3)
    capsys.readouterr()
    assert main(["compare", str(a), str(a2), "--manifest", str(synth_small), "--resamples", "100",
                 "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    row = next(r for r in rep["rows"] if r["part"] == "det" and r["metric"] == "accuracy")
    assert row["low"] <= row["delta"] <= row["high"] and row["p_mcnemar"] is not None
