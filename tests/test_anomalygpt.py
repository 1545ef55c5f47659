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
from mmrbench.adapters.registry import instantiate as create_model
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
    # 0.75: above the stand-in's one-shot floor (0.55), as a calibrated threshold would be
    m = create_model("anomalygpt", fake_cmd(), timeout_s=20, startup_timeout_s=30, threshold=0.75)
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
    """A non-square query: AnomalyGPT sees its central square (x 50..150 of 200x100), and the box lands
    where the defect is, not stretched over the whole width (#16 item 1)."""
    truth = (110, 10, 140, 30)
    [r] = agpt.generate([_req("a1", _with_square(truth), reference=_grey())])
    assert r.status == "ok", r.error
    assert r.image_sizes == [[200, 100], [200, 100]]
    assert r.text.startswith("<think>Yes, there is an anomaly in the image")
    assert "at the top of the image.</think>" in r.text
    parsed = parse_answer(r.text)
    assert parsed.decision is True and len(parsed.boxes) == 1
    box = [float(v) for v in parsed.boxes[0].coords]
    assert iou(box, truth) > 0.8 and all(abs(a - b) <= 3 for a, b in zip(box, truth))


def test_normal_image_says_no(agpt):
    [r] = agpt.generate([_req("n1", _grey(), reference=_grey())])
    assert r.status == "ok" and r.text.endswith("<answer>No.</answer>") and parse_answer(r.text).decision is False


def test_existing_absolute_path_is_passed_through(agpt, tmp_path):
    p = tmp_path / "query.png"
    _with_square((60, 75, 90, 95)).save(p)
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
    for bad in ({"threshold": 2.5}, {"threshold": float("nan")}, {"frame": "squash"},
                {"threshold": 0.5, "calibration": "/x"}, {"calibration_quantile": 1.5}):
        with pytest.raises(ConfigError):
            create_model("anomalygpt", fake_cmd(), **bad)


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
    # the sampling fields are checked as transformers checks them when sampling (AnomalyGPT always does)
    bad = [{"temperature": 0.0}, {"temperature": -1}, {"top_p": 1.5}, {"max_new_tokens": 0}, {"seed": "x"}]
    out = io.StringIO()
    mod.serve(backend, io.StringIO("\n".join(json.dumps({"id": f"x{i}", "query_image": str(img), "prompt": "Q?", **b})
                                             for i, b in enumerate(bad)) + "\n"), out)
    errors = [json.loads(x)["error"] for x in out.getvalue().splitlines()[1:]]
    assert len(errors) == 5 and all(e and e.startswith("ValueError") for e in errors)
    assert "strictly positive" in errors[0] and len(seen) == 1


# -- command line: the model card's id with the worker from the environment ---------------------
def test_cli_eval_anomalygpt_card_with_stand_in_worker(synth_small, tmp_path, monkeypatch):
    from mmrbench.cli import main
    from mmrbench.predictions import read_predictions

    monkeypatch.setenv("MMRBENCH_ANOMALYGPT_WORKER", fake_cmd())
    run = tmp_path / "run"
    assert main(["eval", "--model", "anomalygpt:AnomalyGPT-7B", "--data", str(synth_small), "--limit", "6",
                 "--out", str(run), "--no-progress", "--option", "threshold=0.8"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["model"]["provider"] == "anomalygpt" and result["model"]["threshold"] == 0.8
    assert "pid" not in result["model"]["worker_info"]
    preds = read_predictions(run / "predictions.jsonl")
    assert len(preds) == 6 and all(p.status == "ok" for p in preds)
    for p in preds:
        decision = parse_answer(p.response).decision
        assert decision is not None and p.response.startswith("<think>")
    subsets = result["metrics"]["subdatasets"]
    assert sum(v["invalid"] for v in subsets.values()) == 0


# -- issue #16 items 1-3 and 8, issue #11 item 12 ---------------------------------------------------
def test_crop_region_follows_torchvision_resize_and_centre_crop():
    from mmrbench.adapters.anomalygpt import crop_region

    assert crop_region((200, 100)) == (50.0, 0.0, 100.0, 100.0)  # 448x224, crop from 112
    assert crop_region((100, 100)) == (0.0, 0.0, 100.0, 100.0)
    # 333x100 -> int(224 * 3.33) = 745 wide, crop from round(260.5) = 260 (banker's rounding, as Python)
    x0, y0, w, h = crop_region((333, 100))
    assert (round(x0, 3), y0, round(w, 3), h) == (round(260 * 333 / 745, 3), 0.0, round(224 * 333 / 745, 3), 100.0)
    x0, y0, w, h = crop_region((100, 300))  # portrait: the crop is vertical
    assert (x0, w, h) == (0.0, 100.0, 100.0) and y0 == pytest.approx(100.0)


def test_pad_frame_sees_the_whole_image_and_strips_the_padding():
    truth = (150, 10, 190, 30)  # outside the central square of 200x100: AnomalyGPT's crop cannot see it
    crop = create_model("anomalygpt", fake_cmd(), timeout_s=20, startup_timeout_s=30, threshold=0.75)
    pad = create_model("anomalygpt", fake_cmd(), timeout_s=20, startup_timeout_s=30, threshold=0.75, frame="pad")
    try:
        [rc] = crop.generate([_req("c1", _with_square(truth), reference=_grey())])
        assert parse_answer(rc.text).decision is False
        [rp] = pad.generate([_req("p1", _with_square(truth), reference=_grey())])
        parsed = parse_answer(rp.text)
        assert parsed.decision is True and len(parsed.boxes) == 1
        box = [float(v) for v in parsed.boxes[0].coords]
        assert iou(box, truth) > 0.7 and box[3] <= 100  # inside the image, not in the padding
        assert pad.describe()["frame"] == "pad" and crop.describe()["frame"] == "crop"
    finally:
        crop.close()
        pad.close()


def _normals(folder, n, seed, size=(200, 100)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(90, 110, (size[1], size[0], 1), dtype=np.uint8).repeat(3, axis=2)
        Image.fromarray(base).save(folder / f"n{i}.png")
    return folder


def test_one_shot_threshold_is_calibrated_on_held_out_normals(tmp_path, capsys):
    """One-shot maps are 1 - cosine similarity: their floor on normal pairs is far from 0, so 0.5 puts a
    box over the whole visible square; the fair threshold from held-out normals finds the defect (#16
    item 2)."""
    from mmrbench.vision.thresholds import fair_threshold

    cal = tmp_path / "heldout"
    _normals(cal / "widget", 4, 0)
    _normals(cal / "gadget", 3, 1)
    truth = (110, 10, 140, 30)
    query, reference = _with_square(truth), _grey()
    plain = create_model("anomalygpt", fake_cmd(), timeout_s=20, startup_timeout_s=30)
    calib = create_model("anomalygpt", fake_cmd(), timeout_s=20, startup_timeout_s=30, calibration=str(cal))
    try:
        [r0] = plain.generate([_req("q0", query, reference)])
        warn = capsys.readouterr().err
        assert "uncalibrated" in warn and "calibration=DIR" in warn
        [b0] = parse_answer(r0.text).boxes
        assert iou([float(v) for v in b0.coords], (50, 0, 150, 100)) > 0.9  # the whole crop: uncalibrated
        d = calib.describe()
        assert d["threshold_source"].startswith("calibrated") and d["calibration"]["images"] == 7
        per = d["calibration"]["per_folder"]
        assert set(per) == {"widget", "gadget"} and all(0.55 < v < 0.7 for v in per.values())
        assert calib.threshold == fair_threshold({k: [v] for k, v in per.items()}) > 0.55
        [r1] = calib.generate([_req("q1", query, reference)])
        [b1] = parse_answer(r1.text).boxes
        assert iou([float(v) for v in b1.coords], truth) > 0.7
        assert "uncalibrated" not in capsys.readouterr().err
    finally:
        plain.close()
        calib.close()
    with pytest.raises(ConfigError, match="fewer than 2 images"):
        _normals(tmp_path / "one" / "cat", 1, 2)
        create_model("anomalygpt", fake_cmd(), calibration=str(tmp_path / "one"))


def test_requests_are_seeded_and_greedy_is_recorded_as_unavailable(tmp_path):
    """AnomalyGPT samples whatever it is told: each request carries a seed, so a run repeats (#16 item 3)."""
    from mmrbench.adapters.anomalygpt import request_seed

    log = tmp_path / "requests.jsonl"
    m = create_model("anomalygpt", fake_cmd("--log", str(log)), timeout_s=20, startup_timeout_s=30, threshold=0.75,
                     seed=5)
    try:
        sq = _with_square((60, 30, 90, 70))
        greedy = _req("s1", sq, _grey())
        seeded = Request("s2", greedy.messages, GenerationConfig(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=11))
        m.generate([greedy, seeded, greedy])
        sent = [json.loads(x) for x in log.read_text().splitlines()]
        assert [s["seed"] for s in sent] == [request_seed(5, "s1"), 11, request_seed(5, "s1")]
        assert "temperature" not in sent[0] and (sent[1]["temperature"], sent[1]["top_p"]) == (0.7, 0.9)
        assert m.describe()["sampling"].startswith("AnomalyGPT always samples")
    finally:
        m.close()
    # the stand-in samples as AnomalyGPT does: the same seed repeats, no seed does not
    spec = __import__("importlib.util").util.spec_from_file_location("fake_agpt", FAKE)
    fake = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    q, r = tmp_path / "q.png", tmp_path / "r.png"
    sq.save(q)
    _grey().save(r)
    a, b = fake.detector(str(q), str(r), "", {"seed": 3}), fake.detector(str(q), str(r), "", {"seed": 3})
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    c, d = fake.detector(str(q), str(r), "", {}), fake.detector(str(q), str(r), "", {})
    assert not np.array_equal(c[1], d[1])


def test_map_files_are_confined_to_the_map_folder(agpt):
    """A worker may name a .npy map only inside the folder the harness gave it, links resolved (#11 item 12)."""
    sq = _with_square((60, 30, 90, 70))
    out = agpt.generate([_req("npy2", sq, _grey()), _req("outside1", sq, _grey()), _req("symlink1", sq, _grey())])
    assert out[0].status == "ok" and len(parse_answer(out[0].text).boxes) == 1
    assert out[1].status == "error" and "outside the map folder" in out[1].error
    assert out[2].status == "error" and "outside the map folder" in out[2].error


def test_decode_map_allowed_dir(tmp_path):
    inside, outside = tmp_path / "maps", tmp_path / "else"
    inside.mkdir()
    outside.mkdir()
    np.save(inside / "ok.npy", np.zeros((4, 4), np.float32))
    np.save(outside / "secret.npy", np.ones((4, 4), np.float32))
    (inside / "link.npy").symlink_to(outside / "secret.npy")
    assert decode_map(str(inside / "ok.npy"), allowed_dir=str(inside)).shape == (4, 4)
    for p in (outside / "secret.npy", inside / "link.npy", inside / ".." / "else" / "secret.npy"):
        with pytest.raises(WorkerError, match="outside the map folder"):
            decode_map(str(p), allowed_dir=str(inside))


# -- tools/anomalygpt_worker.py: anomalygpt_backend against a checkout-shaped stand-in --------------
FAKE_OPENLLAMA = """
# A stand-in for AnomalyGPT's code/model/openllama.py (commit f21c51b): the constructor keys its
# test scripts pass, load_state_dict(strict=False), and generate(inputs) reading exactly the keys
# the real generate reads, sampling with torch's RNG (do_sample=True, no seed of its own).
import json, os
import torch

CONSTRUCTOR_KEYS = {"model", "imagebind_ckpt_path", "vicuna_ckpt_path", "anomalygpt_ckpt_path", "delta_ckpt_path",
                    "stage", "max_tgt_len", "lora_r", "lora_alpha", "lora_dropout"}
GENERATE_KEYS = {"prompt", "image_paths", "normal_img_paths", "audio_paths", "video_paths", "thermal_paths",
                 "top_p", "temperature", "max_tgt_len", "modality_embeds"}


class OpenLLAMAPEFTModel(torch.nn.Module):
    def __init__(self, **args):
        super().__init__()
        assert set(args) == CONSTRUCTOR_KEYS, sorted(set(args) ^ CONSTRUCTOR_KEYS)
        self.args = args
        self.proj = torch.nn.Linear(2, 2)
        self.loaded = []

    def load_state_dict(self, state, strict=True):
        assert strict is False and isinstance(state, dict)
        self.loaded.append(sorted(state))
        return super().load_state_dict({k: v for k, v in state.items() if k.startswith("proj.")}, strict=False)

    def generate(self, inputs, web_demo=False):
        assert set(inputs) == GENERATE_KEYS, sorted(set(inputs) ^ GENERATE_KEYS)
        assert os.path.isfile(inputs["image_paths"][0]) and inputs["modality_embeds"] == []
        assert isinstance(inputs["top_p"], float) and isinstance(inputs["temperature"], float)
        noise = torch.rand(1, 1, 224, 224)  # sampling: torch's global RNG
        word = "Yes" if float(noise.mean()) > 0.5 else "No"
        text = json.dumps({"word": word, "top_p": inputs["top_p"], "temperature": inputs["temperature"],
                           "max_tgt_len": inputs["max_tgt_len"], "normal": inputs["normal_img_paths"],
                           "prompt": inputs["prompt"], "loaded": self.loaded})
        return text, noise.half()
"""


@pytest.mark.slow
def test_anomalygpt_backend_against_a_checkout_stand_in(tmp_path):
    torch = pytest.importorskip("torch")
    root = tmp_path / "AnomalyGPT"
    (root / "code" / "model").mkdir(parents=True)
    (root / "code" / "model" / "__init__.py").write_text("")
    (root / "code" / "model" / "openllama.py").write_text(FAKE_OPENLLAMA)
    torch.save({"proj.weight": torch.ones(2, 2)}, tmp_path / "delta.pt")
    torch.save({"proj.bias": torch.zeros(2), "decoder.w": torch.ones(1)}, tmp_path / "agpt.pt")
    q, r = tmp_path / "q.png", tmp_path / "r.png"
    _grey().save(q)
    _grey().save(r)
    reqs = [{"id": "a", "query_image": str(q), "reference_image": str(r), "prompt": "Is there any anomaly?", "seed": 7},
            {"id": "b", "query_image": str(q), "reference_image": None, "prompt": "P", "seed": 7, "temperature": 0.5,
             "top_p": 0.9, "max_new_tokens": 20},
            {"id": "c", "query_image": str(q), "reference_image": str(r), "prompt": "Is there any anomaly?", "seed": 8}]
    cmd = [sys.executable, str(WORKER), "--root", str(root), "--device", "cpu", "--delta-ckpt", str(tmp_path / "delta.pt"),
           "--anomalygpt-ckpt", str(tmp_path / "agpt.pt"), "--imagebind-ckpt", "ib.pth", "--vicuna-ckpt", "vicuna"]
    res = subprocess.run(cmd, input="\n".join(json.dumps(x) for x in reqs) + "\n", capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    ready, a, b, c = lines
    assert ready["ready"] and ready["frame"] == "resize-shorter-224-centre-crop" and ready["sampling"] == "always"
    for rep in (a, b, c):
        assert rep["error"] is None and decode_map(rep["anomaly_map"]).shape == (224, 224)
    ta, tb = json.loads(a["text"]), json.loads(b["text"])
    assert (ta["top_p"], ta["temperature"], ta["max_tgt_len"]) == (0.1, 1.0, 512)  # the test scripts' defaults
    assert (tb["top_p"], tb["temperature"], tb["max_tgt_len"]) == (0.9, 0.5, 20)
    assert ta["normal"] == [str(r)] and tb["normal"] == []
    assert ta["loaded"] == [["proj.weight"], ["decoder.w", "proj.bias"]]  # delta first, then AnomalyGPT's
    # seeded per request: the same seed gives the same sample, another seed another one
    assert a["anomaly_map"] == b["anomaly_map"] and a["anomaly_map"] != c["anomaly_map"]
