"""The gemini provider with the real google-genai client over HTTP to a loopback stand-in, and the
runner end to end with Gemini's box_2d convention."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("google.genai")

from runner_data import make_tiny_manifest  # noqa: E402

from mmrbench.adapters.retry import FAST  # noqa: E402
from mmrbench.cards import parse_spec, with_overrides  # noqa: E402
from mmrbench.data.manifest import read_manifest  # noqa: E402
from mmrbench.predictions import read_predictions  # noqa: E402
from mmrbench.runner import EvalOptions, run_eval  # noqa: E402


class GeminiStandIn:
    """Answers generateContent with a fixed text; the first ``fail`` requests get the given status."""

    def __init__(self, text, fail=()):
        self.text, self.fail, self.requests = text, list(fail), []
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests.append((self.path, dict(self.headers), body))
                if srv.fail:
                    code = srv.fail.pop(0)
                    payload = json.dumps({"error": {"code": code, "message": "scripted", "status": "UNAVAILABLE"}}).encode()
                    self._send(code, payload, {"Retry-After": "0"})
                    return
                payload = json.dumps({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": srv.text}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 500, "candidatesTokenCount": 20, "totalTokenCount": 520},
                    "modelVersion": "gemini-2.5-pro"}).encode()
                self._send(200, payload)

            def _send(self, code, payload, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_runner_with_real_genai_client(tmp_path, monkeypatch):
    manifest = make_tiny_manifest(tmp_path / "data")
    m = read_manifest(manifest)
    # Gemini's box_2d: [ymin, xmin, ymax, xmax] in 0-1000 of the image; 48x40 images
    text = "<answer>Yes. {'box_2d': [150, 104, 400, 354], 'label': 'scratch'}</answer>"
    srv = GeminiStandIn(text, fail=[429, 503])
    monkeypatch.setenv("GEMINI_API_KEY", "g-secret-key")
    try:
        card = with_overrides(parse_spec("gemini-2.5-pro"), base_url=srv.url, concurrency=1)
        res = run_eval(card, manifest, tmp_path / "run", EvalOptions(limit=3, retry=FAST, progress=False, quiet=True))
    finally:
        srv.close()
    assert len(srv.requests) == 3 + 2  # two transient failures retried
    path, headers, body = srv.requests[-1]
    assert path.endswith("/models/gemini-2.5-pro:generateContent")
    assert {k.lower(): v for k, v in headers.items()}["x-goog-api-key"] == "g-secret-key"
    parts = body["contents"][0]["parts"]
    assert [("inlineData" in p) for p in parts] == [True, True, False]
    inline = parts[0]["inlineData"]
    assert inline.get("mimeType", inline.get("mime_type")) == "image/png"  # the SDK sends either spelling
    first = m.select(split="test")[2]
    data = parts[1]["inlineData"]["data"]  # the SDK sends URL-safe base64 without padding
    assert base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)) == m.resolve(first.image).read_bytes()
    assert "first image shows a normal" in parts[2]["text"]
    assert body["systemInstruction"]["parts"][0]["text"].startswith("You are an expert visual inspector")
    assert body["generationConfig"]["maxOutputTokens"] == 16384 and body["generationConfig"]["temperature"] == 0.0
    preds = read_predictions(tmp_path / "run" / "predictions.jsonl")
    assert all(p.status == "ok" and p.convention == "gemini" for p in preds)
    assert "g-secret-key" not in (tmp_path / "run" / "result.json").read_text()
    assert "g-secret-key" not in (tmp_path / "run" / "run.json").read_text()
    assert res.model["convention"] == "gemini"
    # the box maps to ~x 5..17, y 6..16 on 48x40: exactly the a0 ground truth of the tiny manifest
    from mmrbench.scoring import decision_from_prediction
    sample = m.get("SubA/widget/a0")
    d = decision_from_prediction(preds[0].__class__(sample.id, text, convention="gemini"), sample)
    assert d.boxes[0] == pytest.approx(sample.boxes[0].xyxy, abs=0.01)


def test_runner_records_the_convention_of_the_key_the_answer_used(tmp_path, monkeypatch):
    manifest = make_tiny_manifest(tmp_path / "data")
    text = "<answer>Yes. {'bbox_2d': [104, 150, 354, 400], 'label': 'scratch'}</answer>"  # the prompt's key
    srv = GeminiStandIn(text)
    monkeypatch.setenv("GEMINI_API_KEY", "g-secret-key")
    try:
        card = with_overrides(parse_spec("gemini-2.5-pro"), base_url=srv.url, concurrency=1)
        run_eval(card, manifest, tmp_path / "run", EvalOptions(limit=2, retry=FAST, progress=False, quiet=True))
    finally:
        srv.close()
    preds = read_predictions(tmp_path / "run" / "predictions.jsonl")
    assert [p.convention for p in preds] == ["norm1000", "norm1000"]
