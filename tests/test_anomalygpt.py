"""AnomalyGPT bridge: sentence parsing, map decoding, boxes from the map through the contour
pipeline, and the worker lifecycle (crash, hang, noise, restart) against a stand-in worker that
speaks the same protocol through the real worker script's protocol loop."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrbench.adapters.anomalygpt import (PROTOCOL, WorkerError, answer_text, decode_map, encode_map,
                                          location_box, normalise_map, parse_sentence)
from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart
from mmrbench.adapters.registry import create_model
from mmrbench.errors import ConfigError
from mmrbench.geometry import iou
from mmrbench.parsing import parse_answer

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "fake_anomalygpt_worker.py"
WORKER = ROOT / "tools" / "anomalygpt_worker.py"


def fake_cmd(*flags: str) -> str:
    return " ".join([sys.executable, str(FAKE), *flags])


def _grey(w=200, h=100, level=100):
    return Image.new("RGB", (w, h), (level, level, level))


def _with_square(box, w=200, h=100):
    im = _grey(w, h)
    x1, y1, x2, y2 = box
    im.paste((255, 255, 255), (x1, y1, x2, y2))
    return im


def _req(rid, query, reference=None, query_path=None):
    parts = ([ImagePart(reference)] if reference is not None else []) + [ImagePart(query, path=query_path),
                                                                         TextPart("Is there an anomaly?")]
    return Request(rid, [Message("system", "You inspect."), Message("user", parts)], GenerationConfig(max_new_tokens=64))


@pytest.fixture(scope="module")
def agpt():
    m = create_model("anomalygpt", fake_cmd(), timeout_s=20, startup_timeout_s=30)
    yield m
    m.close()


# -- pure helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("No, there is no anomaly in the image.", (False, None)),
    ("Yes, there is an anomaly in the image, at the top left of the image.", (True, "top left")),
    ("Yes, there is an anomaly in the image, at the bottom of the image.", (True, "bottom")),
    ("  yes. There is an anomaly at the center of the image", (True, "center")),
    ("There is an anomaly in the image, at the right of the image.", (True, "right")),
    ("In this image, there is no anomaly.", (False, None)),
    ("The image shows a bottle.", (None, None)),
    ("", (None, None)),
])
def test_parse_sentence(text, expected):
    assert parse_sentence(text) == expected


def test_map_codec_and_safety(tmp_path):
    arr = np.linspace(0, 1, 224 * 224, dtype=np.float32).reshape(224, 224)
    enc = encode_map(arr)
    assert enc["dtype"] == "float16" and enc["shape"] == [224, 224]
    assert np.allclose(decode_map(json.loads(json.dumps(enc))), arr, atol=1e-3)
    np.save(tmp_path / "m.npy", arr[None])  # (1, 224, 224) is accepted as (224, 224)
    assert decode_map(str(tmp_path / "m.npy")).shape == (224, 224)
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(WorkerError):
        decode_map(str(tmp_path / "evil.npy"))  # never unpickled
    with pytest.raises(WorkerError):
        decode_map({**enc, "data": enc["data"][:-8]})
    with pytest.raises(WorkerError):
        decode_map({**enc, "data": "!!notbase64!!"})
    with pytest.raises(WorkerError):
        decode_map({**enc, "dtype": "object"})
    with pytest.raises(WorkerError):
        decode_map({"dtype": "float32", "shape": [1, 1], "data": base64.b64encode(np.float32(np.nan).tobytes()).decode()})
    with pytest.raises(WorkerError):
        decode_map(str(tmp_path / "m.txt"))
    assert np.allclose(normalise_map(np.array([[2.0, 4.0]]), "minmax"), [[0.0, 1.0]])
    with pytest.raises(ConfigError):
        normalise_map(arr, "zscore")


def test_location_box_and_answer_text():
    assert location_box("top left", (300, 90)) == (0.0, 0.0, 100.0, 30.0)
    assert location_box("bottom right", (300, 90)) == (200.0, 60.0, 300.0, 90.0)
    assert location_box("center", (300, 90)) == (100.0, 30.0, 200.0, 60.0)
    yes = answer_text("Yes, there is an anomaly in the image, at the top of the image.", True, [(10, 20, 30, 40)])
    parsed = parse_answer(yes)
    assert parsed.decision is True and [tuple(b.coords) for b in parsed.boxes] == [(10, 20, 30, 40)]
    assert parsed.boxes[0].label == "anomaly"
    no = answer_text("No, there is no anomaly in the image.", False, [(1, 2, 3, 4)])
    assert no.endswith("<answer>No.</answer>") and parse_answer(no).decision is False
    assert parse_answer(answer_text("Yes, anomaly <b>", True, [])).decision is True
    assert "<answer>" not in answer_text("The image shows a bottle.", None, [])


# -- end to end with the stand-in worker -------------------------------------------------------
def test_boxes_from_map_in_original_pixels(agpt):
    truth = (150, 10, 190, 30)
    [r] = agpt.generate([_req("a1", _with_square(truth), reference=_grey())])
    assert r.status == "ok", r.error
    assert r.image_sizes == [[200, 100], [200, 100]]
    assert r.text.startswith("<think>Yes, there is an anomaly in the image, at the top right of the image.</think>")
    parsed = parse_answer(r.text)
    assert parsed.decision is True and len(parsed.boxes) == 1
    box = [float(v) for v in parsed.boxes[0].coords]
    assert iou(box, truth) > 0.8 and all(abs(a - b) <= 3 for a, b in zip(box, truth))


def test_normal_image_says_no(agpt):
    [r] = agpt.generate([_req("n1", _grey(), reference=_grey())])
    assert r.status == "ok" and r.text.endswith("<answer>No.</answer>") and parse_answer(r.text).decision is False


def test_existing_absolute_path_is_passed_through(agpt, tmp_path):
    p = tmp_path / "query.png"
    _with_square((10, 75, 40, 95)).save(p)
    # the in-memory image is plain: a Yes proves the worker read the file on disk, not a temp copy
    [r] = agpt.generate([_req("p1", _grey(), reference=_grey(), query_path=str(p))])
    assert r.status == "ok" and "bottom left" in r.text
    [r2] = agpt.generate([_req("p2", _grey(), reference=_grey(), query_path="relative/query.png")])
    assert r2.status == "ok" and r2.text.endswith("<answer>No.</answer>")  # relative path: temp copy sent


def test_protocol_noise_stale_npy_and_errors(agpt):
    sq = _with_square((50, 30, 90, 70))
    out = agpt.generate([_req("noise1", sq, _grey()), _req("stale1", sq, _grey()), _req("npy1", sq, _grey()),
                         _req("error1", sq, _grey()), _req("badmap1", sq, _grey()), _req("after", sq, _grey())])
    status = [r.status for r in out]
    assert status == ["ok", "ok", "ok", "error", "error", "ok"], [r.error for r in out]
    for r in (out[0], out[1], out[2], out[5]):
        assert len(parse_answer(r.text).boxes) == 1
    assert "CUDA out of memory" in out[3].error
    assert "bytes" in out[4].error


def test_crash_and_hang_restart_worker(tmp_path):
    count = tmp_path / "starts.txt"
    m = create_model("anomalygpt", fake_cmd("--count-file", str(count)), timeout_s=1.5, startup_timeout_s=30)
    try:
        sq = _with_square((50, 30, 90, 70))
        out = m.generate([_req("crash1", sq, _grey()), _req("ok1", sq, _grey()),
                          _req("hang1", sq, _grey()), _req("ok2", sq, _grey())])
        assert [r.status for r in out] == ["error", "ok", "error", "ok"]
        assert "simulated crash" in out[0].error and "code 3" in out[0].error
        assert "no answer within" in out[2].error
        assert count.read_text().count("start") == 3  # initial, after the crash, after the hang
    finally:
        m.close()


def test_start_failures_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="model.openllama"):
        create_model("anomalygpt", fake_cmd("--fail-start"), startup_timeout_s=30)
    with pytest.raises(ConfigError, match="protocol"):
        create_model("anomalygpt", fake_cmd("--wrong-protocol"), startup_timeout_s=30)
    with pytest.raises(ConfigError, match="no ready line"):
        create_model("anomalygpt", fake_cmd("--ready-delay", "5"), startup_timeout_s=0.5)
    monkeypatch.delenv("MMRBENCH_ANOMALYGPT_WORKER", raising=False)
    with pytest.raises(ConfigError, match="worker command"):
        create_model("anomalygpt", "AnomalyGPT-7B")
    monkeypatch.setenv("MMRBENCH_ANOMALYGPT_WORKER", fake_cmd())
    m = create_model("anomalygpt", "AnomalyGPT-7B", threshold=0.3)  # the model card's id + env command
    assert m.describe()["worker_info"]["protocol"] == PROTOCOL and m.describe()["threshold"] == 0.3
    assert m.sent_size((300, 200)) == (300, 200)
    m.close()
    with pytest.raises(ConfigError):
        create_model("anomalygpt", fake_cmd(), threshold=1.5)


def test_restart_gives_up_after_repeated_start_failures():
    m = create_model("anomalygpt", fake_cmd(), timeout_s=5, startup_timeout_s=30, max_restarts=2)
    try:
        m.argv = [sys.executable, str(FAKE), "--fail-start"]  # the environment breaks after the first start
        m._worker.kill()
        out = m.generate([_req(f"r{i}", _grey(), _grey()) for i in range(4)])
        assert all(r.status == "error" for r in out)
        assert "not restarted after 2 failed starts" in out[-1].error
    finally:
        m.close()


# -- the real worker script: CLI and protocol framing ------------------------------------------
def test_worker_script_help_and_framing(tmp_path):
    res = subprocess.run([sys.executable, str(WORKER), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--root" in res.stdout and "AnomalyGPT" in res.stdout
    import importlib.util
    spec = importlib.util.spec_from_file_location("agw", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    img = tmp_path / "q.png"
    _grey().save(img)
    seen = []

    def backend(q, ref, prompt, params):
        seen.append((q, ref, prompt, params))
        return "No, there is no anomaly in the image.", np.zeros((224, 224), np.float32)

    lines = [json.dumps({"id": "a", "query_image": str(img), "reference_image": None, "prompt": "Q?",
                         "temperature": 0.7, "max_new_tokens": 32}),
             "not json",
             json.dumps({"id": "b", "query_image": str(tmp_path / "missing.png"), "reference_image": None, "prompt": "Q?"}),
             json.dumps({"cmd": "shutdown"}),
             json.dumps({"id": "never", "query_image": str(img), "prompt": "Q?"})]
    out = io.StringIO()
    n = mod.serve(backend, io.StringIO("\n".join(lines) + "\n"), out)
    replies = [json.loads(x) for x in out.getvalue().splitlines()]
    assert replies[0]["ready"] is True and replies[0]["protocol"] == PROTOCOL
    assert replies[1]["id"] == "a" and replies[1]["error"] is None
    assert decode_map(replies[1]["anomaly_map"]).shape == (224, 224)
    assert replies[2]["error"] == "request is not valid JSON"
    assert replies[3]["id"] == "b" and "not a readable file" in replies[3]["error"]
    assert len(replies) == 4 and n == 2
    assert seen == [(str(img), None, "Q?", {"max_new_tokens": 32, "temperature": 0.7})]


# -- command line: the model card's id with the worker from the environment ---------------------
def test_cli_eval_anomalygpt_card_with_stand_in_worker(synth_small, tmp_path, monkeypatch):
    from mmrbench.cli import main
    from mmrbench.predictions import read_predictions

    monkeypatch.setenv("MMRBENCH_ANOMALYGPT_WORKER", fake_cmd())
    run = tmp_path / "run"
    assert main(["eval", "--model", "anomalygpt:AnomalyGPT-7B", "--data", str(synth_small), "--limit", "6",
                 "--out", str(run), "--no-progress", "--option", "threshold=0.4"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["model"]["provider"] == "anomalygpt" and result["model"]["threshold"] == 0.4
    assert "pid" not in result["model"]["worker_info"]
    preds = read_predictions(run / "predictions.jsonl")
    assert len(preds) == 6 and all(p.status == "ok" for p in preds)
    for p in preds:
        decision = parse_answer(p.response).decision
        assert decision is not None and p.response.startswith("<think>")
    subsets = result["metrics"]["subdatasets"]
    assert sum(v["invalid"] for v in subsets.values()) == 0
