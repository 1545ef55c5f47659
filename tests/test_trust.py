"""Issue #11: no lost answer, no silent wrong result, no leaked file; one clear line for every bad input.

Each test names the item it holds. Process faults (two concurrent runs, kill -9 during a detector
re-run) use real processes; bad inputs go through the real command line and check the exit code and
that stderr is exactly one line.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from fake_openai_server import FakeOpenAIServer, Reply
from runner_data import answer_for, copy_categories, make_tiny_manifest

from mmrbench.cli import main
from mmrbench.exitcodes import EXIT_INCOMPLETE, EXIT_USAGE
from mmrbench.data.manifest import read_manifest
from mmrbench.predictions import Prediction, read_predictions, write_predictions
from mmrbench.results import read_result

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("OPENAI_API_KEY", None)
    return env


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    return lines[0]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture()
def manifest(tmp_path) -> Path:
    return make_tiny_manifest(tmp_path / "data")


def _answers(manifest: Path, path: Path, *, wrong: bool = False) -> Path:
    m = read_manifest(manifest)
    with open(path, "w", encoding="utf-8") as f:
        for s in m.select(split="test"):
            text = "<answer>No.</answer>" if wrong else answer_for(s)
            f.write(json.dumps({"id": s.id, "response": text}) + "\n")
    return path


# -- 1. two evals on one --out -------------------------------------------------------------------
def test_01_second_concurrent_eval_fails_at_once_naming_the_holder(manifest, tmp_path):
    out = tmp_path / "run"
    with FakeOpenAIServer(lambda req: Reply("<answer>No.</answer>", delay_s=0.4)) as srv:
        cmd = [sys.executable, "-m", "mmrbench", "eval", "--model", "openai:m", "--base-url", srv.base_url,
               "--data", str(manifest), "--out", str(out), "--concurrency", "2", "--no-progress"]
        first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not srv.requests and time.time() < deadline:  # the first run holds the lock by now
            time.sleep(0.05)
        assert srv.requests, "first run sent nothing"
        t0 = time.time()
        second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
        took = time.time() - t0
        n_during = len(srv.requests)
        out1, err1 = first.communicate(timeout=120)
    assert second.returncode == EXIT_USAGE
    line = _one_line(second.stderr)
    assert "in use by another run" in line and f"pid {first.pid}" in line
    assert took < 30
    assert first.returncode == 0, err1
    n_test = len(read_manifest(manifest).select(split="test"))
    assert n_during <= n_test  # the second run paid for nothing
    assert len(srv.requests) == n_test
    preds = read_predictions(out / "predictions.jsonl")
    assert len(preds) == n_test and all(p.status == "ok" for p in preds)


# -- 2. kill -9 during a detector re-run --------------------------------------------------------
@pytest.mark.slow
def test_02_killed_detector_rerun_leaves_previous_run_intact(synth_small, tmp_path):
    data = tmp_path / "data"
    copy_categories(synth_small, ("carpet",), data)
    recipe = tmp_path / "fast.toml"
    recipe.write_text('method = "padim"\npixel_auroc_size = 32\n[model]\nimage_size = 64\nblur_sigma = 1.0\nd = 40\n'
                      '[boxes]\nmin_area = 4\n')
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mmrbench", "eval", "--model", "padim", "--data", str(data / "manifest.jsonl"),
           "--out", str(out), "--recipe", str(recipe), "--no-progress"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before = (out / "predictions.jsonl").read_bytes()
    result_before = (out / "result.json").read_bytes()
    shutil.rmtree(out / "cache")  # the re-run must fit again: time to kill it mid-way
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / ".predictions.jsonl.partial"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert partial.exists(), "the re-run never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (out / "predictions.jsonl").read_bytes() == before
    assert (out / "result.json").read_bytes() == result_before
    run = json.loads((out / "run.json").read_text())
    assert run["state"] != "complete"
    # and the next run completes and marks itself complete last
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "complete"
    assert run["predictions_sha256"] == read_result(out).predictions_sha256
    assert not partial.exists()


# -- 3. predictions.jsonl that is a symlink ------------------------------------------------------
def test_03_symlinked_predictions_are_refused_and_the_target_untouched(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    (out / "predictions.jsonl").symlink_to(target)
    answers = _answers(manifest, tmp_path / "a.jsonl")
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{answers}", "--data", str(manifest), "--out", str(out),
                      "--no-progress")
    assert rc == EXIT_USAGE
    assert "symbolic link" in _one_line(err)
    assert target.read_text() == "precious\n"


def test_03_writer_never_follows_a_link(tmp_path):
    from mmrbench.predictions import PredictionsError, PredictionWriter
    target = tmp_path / "t.txt"
    target.write_text("keep")
    (tmp_path / "p.jsonl").symlink_to(target)
    with pytest.raises(PredictionsError, match="symbolic link"):
        PredictionWriter(tmp_path / "p.jsonl")
    assert target.read_text() == "keep"


# -- 4. run.json corrupt or deleted: the predictions say which run they belong to ----------------
@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_04_answers_of_model_a_are_never_credited_to_model_b(manifest, tmp_path, capsys, damage):
    out = tmp_path / "run"
    a = _answers(manifest, tmp_path / "a.jsonl")
    b = _answers(manifest, tmp_path / "b.jsonl", wrong=True)
    rc, _, _ = _cli(capsys, "eval", "--model", f"scripted:{a}", "--data", str(manifest), "--out", str(out),
                    "--no-progress")
    assert rc == 0
    if damage == "delete":
        (out / "run.json").unlink()
    else:
        (out / "run.json").write_text("{not json")
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{b}", "--data", str(manifest), "--out", str(out),
                      "--no-progress")
    assert rc == EXIT_USAGE
    assert "another run" in _one_line(err)


def test_04_lines_of_unknown_origin_are_refused_and_own_lines_resume(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    a = _answers(manifest, tmp_path / "a.jsonl")
    argv = ["eval", "--model", f"scripted:{a}", "--data", str(manifest), "--out", str(out), "--no-progress"]
    assert _cli(capsys, *argv)[0] == 0
    (out / "run.json").unlink()
    rc, out_text, _ = _cli(capsys, *argv)  # same run: its own tags prove the origin
    assert rc == 0 and "0 asked this run" in out_text
    preds = read_predictions(out / "predictions.jsonl")
    write_predictions(out / "predictions.jsonl", [Prediction(p.id, p.response) for p in preds])  # tags stripped
    rc, _, err = _cli(capsys, *argv)
    assert rc == EXIT_USAGE and "unknown origin" in _one_line(err)


def test_04_a_lora_option_is_part_of_the_run(manifest, tmp_path):
    from mmrbench.runner import fingerprint, run_tag
    base = {"provider": "hf", "model_id": "m", "convention": "pixel", "sampling": {}}
    fa = fingerprint({**base, "options": {"lora": "A"}}, "sha", "default", None)
    fb = fingerprint({**base, "options": {"lora": "B"}}, "sha", "default", None)
    assert run_tag(fa) != run_tag(fb)


# -- 5. one rule: the latest line wins -----------------------------------------------------------
def test_05_score_takes_the_latest_line_of_a_retried_id(manifest, tmp_path, capsys):
    m = read_manifest(manifest)
    tests = m.select(split="test")
    lines = [Prediction(s.id, answer_for(s)) for s in tests]
    retried = tests[0]
    pred = tmp_path / "p.jsonl"
    rows = [Prediction(retried.id, None, "error", "HTTP 500")] + lines  # error line first, then the answer
    write_predictions(pred, rows)
    rc, out, err = _cli(capsys, "score", "--manifest", str(manifest), "--predictions", str(pred), "--format", "json")
    assert rc == 0, err
    got = json.loads(out)
    from mmrbench.scoring import score_predictions
    assert got == score_predictions(tests, lines).to_json()


# -- 6. unknown options are errors that list the valid ones --------------------------------------
def test_06_misspelt_option_fails_and_lists_valid_keys(manifest, tmp_path, capsys):
    rc, _, err = _cli(capsys, "eval", "--model", "hf:/nonexistent/model", "--option", "lroa=/tmp/adapter",
                      "--data", str(manifest), "--out", str(tmp_path / "run"), "--no-progress")
    assert rc == EXIT_USAGE
    line = _one_line(err)
    assert "'lroa'" in line and "lora" in line and "valid --option keys" in line
    assert not (tmp_path / "run" / "result.json").exists()


def test_06_card_option_unknown_fails(manifest, tmp_path, capsys):
    card = tmp_path / "card.toml"
    a = _answers(manifest, tmp_path / "a.jsonl")
    card.write_text(f'name = "x"\nprovider = "scripted"\nmodel_id = "{a}"\n[options]\ntemprature = 0.5\n')
    rc, _, err = _cli(capsys, "eval", "--model", str(card), "--data", str(manifest), "--out", str(tmp_path / "r"),
                      "--no-progress")
    assert rc == EXIT_USAGE and "'temprature'" in _one_line(err)


def test_06_flag_a_provider_does_not_use_fails(manifest, tmp_path, capsys):
    a = _answers(manifest, tmp_path / "a.jsonl")
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{a}", "--base-url", "http://127.0.0.1:9/v1",
                      "--data", str(manifest), "--out", str(tmp_path / "r"), "--no-progress")
    assert rc == EXIT_USAGE and "--base-url" in _one_line(err)


# -- 7. run parameters checked before the first request ------------------------------------------
@pytest.mark.parametrize("flags, field", [
    (["--temperature", "nan"], "temperature"), (["--timeout", "-1"], "timeout_s"), (["--top-p", "5"], "top_p"),
    (["--concurrency", "-5"], "concurrency"), (["--concurrency", "0"], "concurrency"),
    (["--max-new-tokens", "0"], "max_new_tokens"), (["--min-p", "2"], "min_p"), (["--retries", "0"], "retries"),
    (["--retry-wait", "inf"], "retry_wait"), (["--max-image-side", "0"], "max_image_side"),
])
def test_07_bad_run_parameters_fail_before_any_request(manifest, tmp_path, capsys, flags, field):
    with FakeOpenAIServer(lambda req: Reply("<answer>No.</answer>")) as srv:
        rc, _, err = _cli(capsys, "eval", "--model", "openai:m", "--base-url", srv.base_url, "--data", str(manifest),
                          "--out", str(tmp_path / "run"), "--no-progress", *flags)
        assert not srv.requests
    assert rc == EXIT_USAGE
    assert field in _one_line(err)
    assert not (tmp_path / "run" / "result.json").exists()


def test_07_score_threshold_nan(manifest, tmp_path, capsys):
    pred = tmp_path / "p.jsonl"
    write_predictions(pred, [Prediction("x", "No.")])
    rc, _, err = _cli(capsys, "score", "--manifest", str(manifest), "--predictions", str(pred), "--threshold", "nan")
    assert rc == EXIT_USAGE and "threshold" in _one_line(err)


# -- 8 + 10. an image whose size disagrees with the manifest; exit non-zero when unanswered -------
def test_08_size_mismatch_is_an_error_for_that_sample_and_the_run_exits_3(manifest, tmp_path, capsys):
    m = read_manifest(manifest)
    victim = m.select(split="test")[0]
    Image.new("RGB", (victim.width * 2, victim.height * 2), (128, 128, 128)).save(m.resolve(victim.image))
    a = _answers(manifest, tmp_path / "a.jsonl")
    out = tmp_path / "run"
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{a}", "--data", str(manifest), "--out", str(out),
                      "--no-progress")
    assert rc == EXIT_INCOMPLETE
    line = _one_line(err)
    assert "1 of" in line and "manifest says" in line
    preds = {p.id: p for p in read_predictions(out / "predictions.jsonl")}
    assert preds[victim.id].status == "error" and "manifest says" in preds[victim.id].error
    assert read_result(out).metrics  # the result is written all the same
    assert json.loads((out / "run.json").read_text())["state"] == "incomplete"


def test_10_a_run_where_every_request_failed_exits_non_zero(manifest, tmp_path, capsys):
    body = b'{"error": {"message": "model not found"}}'
    with FakeOpenAIServer(lambda req: Reply(status=404, body=body)) as srv:
        rc, _, err = _cli(capsys, "eval", "--model", "openai:m", "--base-url", srv.base_url, "--data", str(manifest),
                          "--out", str(tmp_path / "run"), "--no-progress", "--retries", "1")
    n = len(read_manifest(manifest).select(split="test"))
    assert rc == EXIT_INCOMPLETE
    line = _one_line("\n".join(ln for ln in err.splitlines() if ln.startswith("mmrbench:")))  # one summary line
    assert f"{n} of {n} samples have no answer" in line and "model not found" in line
    assert (tmp_path / "run" / "result.json").exists()


# -- 16. tracebacks never reach users ------------------------------------------------------------
def _huge_png(path: Path) -> None:
    Image.new("1", (10_000, 10_000)).save(path)  # 100 Mpx, a few kB on disk


def test_16_decompression_bomb_in_data_check_and_eval(manifest, tmp_path, capsys):
    m = read_manifest(manifest)
    victim = m.select(split="test")[0]
    _huge_png(m.resolve(victim.image))
    rc, out, err = _cli(capsys, "data", "check", str(manifest))
    assert rc != 0 and "Traceback" not in err and "pixel limit" in out + err
    a = _answers(manifest, tmp_path / "a.jsonl")
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{a}", "--data", str(manifest), "--out", str(tmp_path / "r"),
                      "--no-progress")
    assert rc == EXIT_INCOMPLETE and "pixel limit" in _one_line(err)


def _deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def test_16_deeply_nested_json_everywhere(manifest, tmp_path, capsys):
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"id": "x", "response": ' + _deep() + "}\n")
    rc, _, err = _cli(capsys, "score", "--manifest", str(manifest), "--predictions", str(pred))
    assert rc == EXIT_USAGE and "nested" in _one_line(err)
    res = tmp_path / "result.json"
    res.write_text('{"model": ' + _deep() + "}")
    rc, _, err = _cli(capsys, "validate", str(res))
    assert rc != 0 and "Traceback" not in err
    _one_line(err)
    bad = tmp_path / "m.jsonl"
    bad.write_text(_deep() + "\n")
    rc, _, err = _cli(capsys, "eval", "--model", "padim", "--data", str(bad), "--out", str(tmp_path / "r"))
    assert rc == EXIT_USAGE and "nested" in _one_line(err)


@pytest.mark.parametrize("body, field", [
    ('batch_size = "8"\n', "batch_size"), ('[model]\nd = 100000\n', "model.d"), ('[model]\nd = 449\n', "model.d"),
    ('[model]\neps = nan\n', "model.eps"), ('[boxes]\nnms_iou = 2.0\n', "boxes.nms_iou"),
    ('[model]\nlayers = ["layer9"]\n', "model.layers"),
])
def test_16_detector_recipe_values_checked_when_read(manifest, tmp_path, capsys, body, field):
    recipe = tmp_path / "r.toml"
    recipe.write_text(body)
    rc, _, err = _cli(capsys, "eval", "--model", "padim", "--recipe", str(recipe), "--data", str(manifest),
                      "--out", str(tmp_path / "run"), "--no-progress")
    assert rc == EXIT_USAGE
    assert field in _one_line(err)


def test_16_out_is_an_existing_file(manifest, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    a = _answers(manifest, tmp_path / "a.jsonl")
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{a}", "--data", str(manifest), "--out", str(f))
    assert rc == EXIT_USAGE and "existing file" in _one_line(err)


def test_16_non_utf8_scripted_answers(manifest, tmp_path, capsys):
    a = tmp_path / "a.jsonl"
    a.write_bytes(b'{"id": "x", "response": "\xff\xfe"}\n')
    rc, _, err = _cli(capsys, "eval", "--model", f"scripted:{a}", "--data", str(manifest), "--out", str(tmp_path / "r"))
    assert rc == EXIT_USAGE and "UTF-8" in _one_line(err)


def test_16_nan_box_in_a_manifest(manifest, tmp_path, capsys):
    lines = manifest.read_text().splitlines()
    d = json.loads(lines[-1])
    d["boxes"] = [[float("nan"), 1, 2, 3]]
    d["box_labels"] = ["x"]
    lines[-1] = json.dumps(d)  # Python writes NaN, which JSON does not have
    manifest.write_text("\n".join(lines) + "\n")
    rc, _, err = _cli(capsys, "data", "check", str(manifest))
    assert rc == EXIT_USAGE and "NaN" in _one_line(err)


def test_16_internal_errors_are_one_line_and_verbose_shows_the_traceback(monkeypatch, capsys):
    import mmrbench.commands.models as models_cmd

    def boom(args):
        raise ZeroDivisionError("bug")
    monkeypatch.setattr(models_cmd, "run", boom)
    rc, _, err = _cli(capsys, "models")
    assert rc == 1 and "internal error" in _one_line(err)
    rc, _, err = _cli(capsys, "-v", "models")
    assert rc == 1 and "Traceback" in err


def test_16_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", "x", "--data", "y", "--out", "z", "--concurrency", "abc"])
    assert exc.value.code == EXIT_USAGE
    _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("kind, body, field", [
    ("sft", "[lora]\nr = 100000000000\n", "lora.r"), ("grpo", "[grpo]\ntemperature = nan\n", "grpo.temperature"),
    ("sft", '[sft]\nlr = "fast"\n', "sft.lr"), ("grpo", "[grpo]\ntop_p = 1.5\n", "grpo.top_p"),
    ("sft", "[sft]\nmax_steps = -3\n", "sft.max_steps"),
])
def test_16_training_recipe_values_checked_before_any_model_loads(tmp_path, capsys, kind, body, field):
    recipe = tmp_path / "r.toml"
    recipe.write_text(body)
    rc, _, err = _cli(capsys, "train", kind, "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert rc == EXIT_USAGE
    assert field in _one_line(err)


def test_06_a_provider_with_a_fixed_convention_refuses_another(tmp_path, capsys):
    """AnomalyGPT writes original pixels (boxes come from its map): --convention norm1000 would make
    the scorer misread every box, so it is an error, not a silent rescaling."""
    from mmrbench.adapters.anomalygpt import AnomalyGPTModel
    from mmrbench.adapters.base import ModelAPI
    from mmrbench.errors import ConfigError

    assert AnomalyGPTModel.fixed_convention and not ModelAPI.fixed_convention
    m = AnomalyGPTModel.__new__(AnomalyGPTModel)  # no worker process needed to check the rule
    with pytest.raises(ConfigError, match="writes its boxes as 'pixel'"):
        m.set_convention("norm1000")
    m.set_convention("pixel")
