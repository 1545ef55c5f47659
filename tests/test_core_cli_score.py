"""`mmrbench score` end to end, including the one-line errors users see."""
import json
import subprocess
import sys

from mmrbench.cli import main
from mmrbench.data.manifest import write_manifest
from mmrbench.data.schema import Box, Sample
from mmrbench.predictions import Prediction, write_predictions


def make(tmp_path):
    samples = [
        Sample("a1", "MVTecAD", "screw", "test", "a1.png", "anomalous", 100, 100, "r.png", [Box(10, 10, 30, 30, "x")]),
        Sample("n1", "MVTecAD", "screw", "test", "n1.png", "normal", 100, 100, "r.png"),
        Sample("t1", "MVTecAD", "screw", "train", "t1.png", "normal", 100, 100, None),
    ]
    write_manifest(tmp_path / "manifest.jsonl", samples)
    write_predictions(tmp_path / "p.jsonl", [
        Prediction("a1", "<answer>Yes. {'bbox_2d': [10, 10, 30, 30], 'label': 'x'}</answer>"),
        Prediction("n1", "<answer>No.</answer>"),
    ])
    return tmp_path / "manifest.jsonl", tmp_path / "p.jsonl"


def test_score_table(tmp_path, capsys):
    m, p = make(tmp_path)
    assert main(["score", "--manifest", str(m), "--predictions", str(p)]) == 0
    out = capsys.readouterr().out
    assert "MVTecAD" in out and "100.0/100.0" in out


def test_score_json(tmp_path, capsys):
    m, p = make(tmp_path)
    assert main(["score", "--manifest", str(m), "--predictions", str(p), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["subdatasets"]["MVTecAD"]["det"]["accuracy"] == 1.0
    assert d["subdatasets"]["MVTecAD"]["n"] == 2  # train sample not scored


def test_bad_predictions_line_is_one_line_error(tmp_path, capsys):
    m, p = make(tmp_path)
    p.write_text('{"id": "a1", "response": "Yes"}\n{"id": 5}\n')
    assert main(["score", "--manifest", str(m), "--predictions", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "p.jsonl:2" in err and "'id'" in err


def test_torn_last_line_is_ignored(tmp_path, capsys):
    m, p = make(tmp_path)
    with open(p, "a") as f:
        f.write('{"id": "zz", "resp')
    assert main(["score", "--manifest", str(m), "--predictions", str(p)]) == 0


def test_missing_manifest_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mmrbench", "score", "--manifest", str(tmp_path / "x.jsonl"),
                        "--predictions", str(tmp_path / "p.jsonl")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "manifest not found" in r.stderr
