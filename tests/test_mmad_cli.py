"""The MMAD commands (``python -m mmrbench.mmad ...``, to be registered in mmrbench's CLI): import,
eval, synth, score-answers, reported; bad input ends in one 'mmrbench: error:' line and exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_mmad_data import write_release  # noqa: E402

from mmrbench.mmad.commands import main  # noqa: E402
from mmrbench.mmad.task import MMADTask  # noqa: E402
from mmrbench.mmad.data import load_mmad  # noqa: E402


def test_import_and_errors(tmp_path, capsys):
    root = write_release(tmp_path / "MMAD")
    assert main(["import", str(root), "--out", str(tmp_path / "idx")]) == 0
    assert "4 images, 14 questions" in capsys.readouterr().out
    assert (tmp_path / "idx" / "questions.jsonl").is_file()
    obj = json.loads((root / "mmad.json").read_text())
    next(iter(obj.values()))["conversation"][0]["Answer"] = "Q"
    (root / "mmad.json").write_text(json.dumps(obj))
    assert main(["import", str(root), "--out", str(tmp_path / "idx2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmrbench: error: ") and "field 'conversation[0].Answer'" in err and "\n" not in err


def test_eval_scripted_and_score_answers(tmp_path, capsys):
    root = write_release(tmp_path / "MMAD")
    queries = MMADTask(load_mmad(root)).select()
    script = tmp_path / "s.jsonl"
    script.write_text("".join(json.dumps({"id": q.id, "response": "Answer: A."}) + "\n" for q in queries))
    assert main(["eval", "--model", f"scripted:{script}", "--data", str(root), "--out", str(tmp_path / "run"),
                 "--mode", "mmad-compatible"]) == 0
    out = capsys.readouterr().out
    assert "mode mmad-compatible" in out and "| DS-MVTec" in out
    assert json.loads((tmp_path / "run" / "result.json").read_text())["protocol"]["scoring_mode"] == "mmad-compatible"
    assert main(["eval", "--model", f"scripted:{script}", "--data", str(root), "--out", str(tmp_path / "r2"),
                 "--shard", "3/2"]) == 2
    assert "--shard '3/2'" in capsys.readouterr().err
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"image": "X/c/test/good/0.png", "question_type": "Anomaly Detection",
                                    "correct_answer": "B", "gpt_answer": "B"}]))
    assert main(["score-answers", str(answers)]) == 0
    assert "| X " in capsys.readouterr().out


def test_reported_and_module_entry(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mmrbench.mmad", "reported"], capture_output=True, text=True,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert "Qwen2.5-VL-72B-Instruct-AWQ" in r.stdout and "all_result/answers_1_shot_gpt-4o_accuracy.csv" in r.stdout
    assert "74.3" in r.stdout  # GPT-4o's published average
