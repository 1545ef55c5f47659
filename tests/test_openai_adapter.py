"""The openai provider against the loopback server: wire format, status mapping, errors, retries, keys."""
from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

pytest.importorskip("openai")

from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart  # noqa: E402
from mmrbench.adapters.image_encoding import ImagePrep, smart_resize  # noqa: E402
from mmrbench.adapters.openai_api import OpenAIModel, redact_url, resolve_api_key  # noqa: E402
from mmrbench.adapters.retry import FAST, RetryPolicy, call_with_retry, parse_retry_after  # noqa: E402
from mmrbench.adapters.base import Response  # noqa: E402
from mmrbench.errors import ConfigError  # noqa: E402


def request(cfg=None, sizes=((64, 48), (80, 60))):
    ims = [Image.new("RGB", s, c) for s, c in zip(sizes, ("white", "red"))]
    return Request("s1", [Message("system", "SYS"), Message("user", [*map(ImagePart, ims), TextPart("inspect")])],
                   cfg or GenerationConfig(max_new_tokens=99, temperature=0.0, top_p=0.5, min_p=0.1, seed=7))


@pytest.fixture()
def server():
    with FakeOpenAIServer(lambda req: Reply("<answer>No.</answer>")) as srv:
        yield srv


def test_wire_format(server):
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST, image_detail="high")
    [r] = m.generate([request()])
    assert r.status == "ok" and r.text == "<answer>No.</answer>" and r.image_sizes == [[64, 48], [80, 60]]
    assert r.usage.prompt_tokens > 0
    req = server.requests[0]
    assert req.headers["authorization"] == "Bearer EMPTY"  # custom server, no key set: dummy key
    assert req.body["messages"][0] == {"role": "system", "content": "SYS"}
    content = req.body["messages"][1]["content"]
    assert [p["type"] for p in content] == ["image_url", "image_url", "text"]
    assert content[0]["image_url"]["detail"] == "high"
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (80, 60)
    b = req.body
    assert (b["max_tokens"], b["temperature"], b["top_p"], b["seed"]) == (99, 0.0, 0.5, 7)
    assert b["min_p"] == 0.1  # sampling extension for vLLM/SGLang servers travels in the body
    assert "max_completion_tokens" not in b


def test_reasoning_models_use_max_completion_tokens_and_no_temperature(server):
    m = OpenAIModel("o4-mini", base_url=server.base_url, reasoning=True, reasoning_effort="high", retry=FAST)
    m.generate([request()])
    b = server.requests[0].body
    assert b["max_completion_tokens"] == 99 and b["reasoning_effort"] == "high"
    for k in ("max_tokens", "temperature", "top_p", "min_p"):
        assert k not in b


@pytest.mark.parametrize("reply,status", [
    (Reply("partial", finish_reason="length"), "truncated"),
    (Reply(None, finish_reason="content_filter"), "refused"),
    (Reply(None, refusal="I can't help with that."), "refused"),
    (Reply("ok", finish_reason="stop"), "ok"),
    (Reply(None, finish_reason="stop"), "error"),  # no content: malformed
    (Reply(body=b'{"id": "x", "object": "chat.completion", "choices": []}'), "error"),
    (Reply(body=b"<html>502 from a proxy</html>"), "error"),
])
def test_status_mapping(server, reply, status):
    server.enqueue(reply)
    [r] = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST).generate([request()])
    assert r.status == status
    if status == "error":
        assert "malformed" in r.error and not r.retryable


@pytest.mark.parametrize("code,retryable", [(429, True), (500, True), (502, True), (503, True), (408, True),
                                            (400, False), (401, False), (403, False), (404, False), (422, False)])
def test_error_classes(server, code, retryable):
    server.enqueue(Reply(status=code, headers={"Retry-After": "7"}))
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST)
    r = m._call(request())
    assert r.status == "error" and r.retryable is retryable and f"HTTP {code}" in r.error
    assert r.retry_after_s == (7.0 if retryable else None)


def test_retry_after_honoured_and_attempts_bounded(server):
    server.enqueue(Reply(status=429, headers={"Retry-After": "0.3"}))
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST)
    t0 = time.perf_counter()
    [r] = m.generate([request()])
    assert r.status == "ok" and r.attempts == 2 and time.perf_counter() - t0 >= 0.3
    server.enqueue(*[Reply(status=500)] * 10)
    n0 = len(server.requests)
    [r] = m.generate([request()])
    assert r.status == "error" and r.retryable and len(server.requests) - n0 == FAST.max_attempts


def test_timeout_is_retried(server):
    server.enqueue(Reply("slow", delay_s=1.0))
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST, timeout_s=0.3)
    [r] = m.generate([request()])
    assert r.status == "ok" and r.text == "<answer>No.</answer>" and r.attempts == 2


def test_streaming_joins_chunks(server):
    server.enqueue(Reply("<think>long reasoning</think><answer>Yes. {'bbox_2d': [1, 2, 3, 4]}</answer>"),
                   Reply("cut", finish_reason="length"))
    m = OpenAIModel("qvq-max", base_url=server.base_url, stream=True, retry=FAST)
    r1, r2 = m.generate([request(), request()])
    texts = {r1.text, r2.text}
    assert "<think>long reasoning</think><answer>Yes. {'bbox_2d': [1, 2, 3, 4]}</answer>" in texts
    assert {r1.status, r2.status} == {"ok", "truncated"}
    assert all(req.body["stream"] is True for req in server.requests)


def test_concurrent_generate_keeps_order(server):
    server.responder = lambda req: Reply(f"size {req.image_sizes[-1][0]}", delay_s=0.05)
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST, concurrency=8)
    reqs = [request(sizes=((10, 10), (20 + i, 10))) for i in range(12)]
    t0 = time.perf_counter()
    out = m.generate(reqs)
    assert [r.text for r in out] == [f"size {20 + i}" for i in range(12)]
    assert time.perf_counter() - t0 < 12 * 0.05  # ran in parallel


def test_image_resizing_is_recorded(server):
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST, image_prep=ImagePrep(resize="max_side", max_side=40))
    [r] = m.generate([request()])
    assert r.image_sizes == [[40, 30], [40, 30]]
    assert server.requests[0].image_sizes == [(40, 30), (40, 30)]
    m = OpenAIModel("qvq", base_url=server.base_url, retry=FAST, image_prep=ImagePrep(resize="smart"))
    [r] = m.generate([request(sizes=((300, 200), (1000, 700)))])
    assert r.image_sizes[1] == list(smart_resize(1000, 700)) and all(v % 28 == 0 for v in r.image_sizes[1])


def test_smart_resize_rule():
    assert smart_resize(1000, 700) == (1008, 700)
    w, h = smart_resize(4000, 3000, max_pixels=1280 * 28 * 28)
    assert w % 28 == h % 28 == 0 and w * h <= 1280 * 28 * 28 and abs(w / h - 4 / 3) < 0.05
    w, h = smart_resize(20, 20)
    assert w * h >= 4 * 28 * 28 and w % 28 == 0


def test_keys(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        resolve_api_key(None, None)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4o")
    with pytest.raises(ConfigError, match="DASHSCOPE_API_KEY"):
        resolve_api_key("DASHSCOPE_API_KEY", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", True)
    assert resolve_api_key(None, "http://127.0.0.1:8000/v1") == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    m = OpenAIModel("gpt-4o")
    assert "sk-very-secret" not in repr(m.describe())
    assert m.describe()["base_url"] == "https://api.openai.com/v1"
    assert redact_url("https://user:pw@host:8000/v1") == "https://host:8000/v1"


def test_key_sent_but_never_recorded(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MY_KEY", "sk-test-do-not-leak")
    m = OpenAIModel("gpt-4o", base_url=server.base_url, api_key_env="MY_KEY", retry=FAST)
    m.generate([request()])
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-do-not-leak"
    assert "sk-test-do-not-leak" not in repr(m.describe())


def test_retry_policy_units():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({}) is None and parse_retry_after({"Retry-After": "soon"}) is None
    p = RetryPolicy(initial_s=1, multiplier=2, max_wait_s=5, jitter=False)
    assert [p.backoff(k) for k in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert p.wait_for(1, 10.0) == 10.0 and RetryPolicy(max_retry_after_s=3, jitter=False).wait_for(1, 99) == 3
    j = RetryPolicy(initial_s=2, jitter=True)
    assert all(1.0 <= j.backoff(1) <= 2.0 for _ in range(50))
    waits = []
    seq = iter([Response(None, "error", retryable=True, retry_after_s=0.5), Response("x")])
    r = call_with_retry(lambda: next(seq), RetryPolicy(initial_s=0.01, jitter=False), sleep=waits.append)
    assert r.text == "x" and r.attempts == 2 and waits == [0.5]


def test_unmodified_files_are_sent_as_their_own_bytes(server, tmp_path):
    from mmrbench.requests_build import FileImagePart
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.new("RGB", (30, 20), "blue").save(png)
    Image.new("RGB", (40, 10), "green").save(jpg, quality=80)
    parts = [FileImagePart(Image.open(p).convert("RGB"), path=p.name, file=str(p)) for p in (png, jpg)]
    req = Request("f", [Message("user", [*parts, TextPart("t")])])
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST)
    [r] = m.generate([req])
    sent = server.requests[0].images
    assert [mime for mime, _ in sent] == ["image/png", "image/jpeg"]
    assert sent[0][1] == png.read_bytes() and sent[1][1] == jpg.read_bytes()
    assert r.image_sizes == [[30, 20], [40, 10]]
    # resizing, or an image without a source file (e.g. drawn on), is re-encoded
    m = OpenAIModel("gpt-4o", base_url=server.base_url, retry=FAST, image_prep=ImagePrep(resize="max_side", max_side=20))
    [r] = m.generate([req])
    assert [mime for mime, _ in server.requests[1].images] == ["image/png", "image/png"]
    assert r.image_sizes == [[20, 13], [20, 5]]


def test_reasoning_content_kept_beside_the_answer(server, tmp_path):
    server.enqueue(Reply("<answer>No.</answer>", reasoning_content="I compared both images."))
    [r] = OpenAIModel("m", base_url=server.base_url, retry=FAST).generate([request()])
    assert r.text == "<answer>No.</answer>" and r.reasoning == "I compared both images."
    server.enqueue(Reply("<answer>No.</answer>", reasoning_content="streamed thoughts"))
    [r] = OpenAIModel("qvq", base_url=server.base_url, retry=FAST, stream=True).generate([request()])
    assert r.text == "<answer>No.</answer>" and r.reasoning == "streamed thoughts"
    from mmrbench.runner import prediction_from_response
    assert prediction_from_response("s", r, "pixel").to_json()["reasoning_content"] == "streamed thoughts"


def test_api_resize_matches_the_local_qwen_frame():
    from mmrbench.adapters.qwen_vision import smart_resize as qwen
    for w, h in [(256, 256), (1000, 700), (37, 900), (4096, 2160), (30, 30)]:
        assert smart_resize(w, h) == tuple(reversed(qwen(h, w, min_pixels=4 * 28 * 28)))


# -- issue #11 item 11: the server's explanation, bounded and scrubbed, and the URL ------------------
def test_http_400_keeps_the_servers_detail_and_the_url(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-live-abcdefghijklmnopqrstuvwxyz")
    detail = {"detail": "max_tokens (99) is larger than the context left (42); key sk-live-abcdefghijklmnopqrstuvwxyz"}
    server.enqueue(Reply(status=400, body=json.dumps(detail).encode()))
    m = OpenAIModel("qwen", base_url=server.base_url, api_key_env="MY_KEY", retry=FAST)
    r = m._call(request())
    assert r.status == "error" and not r.retryable
    assert r.error.startswith(f"HTTP 400 BadRequestError from {server.base_url}/chat/completions: ")
    assert "max_tokens (99) is larger than the context left (42)" in r.error
    assert "abcdefghijklmnop" not in r.error and "***" in r.error


def test_http_422_pydantic_detail_and_openai_error_shape(server):
    server.enqueue(Reply(status=422, body=json.dumps({"detail": [{"loc": ["body", "top_p"], "msg": "must be <= 1"}]}).encode()),
                   Reply(status=400, body=json.dumps({"error": {"message": "Invalid image", "type": "invalid_request_error"}}).encode()),
                   Reply(status=400, body=("x" * 5000).encode()))
    m = OpenAIModel("qwen", base_url=server.base_url, retry=FAST)
    r = m._call(request())
    assert "HTTP 422" in r.error and "top_p" in r.error and "must be <= 1" in r.error
    assert m._call(request()).error.endswith(": Invalid image")
    long = m._call(request()).error
    assert len(long) < 500 and long.endswith("...")


def test_refused_connection_names_the_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    m = OpenAIModel("qwen", base_url=f"http://user:pw@127.0.0.1:{port}/v1", retry=FAST)
    r = m._call(request())
    assert r.status == "error" and r.retryable
    assert f"connection error to http://127.0.0.1:{port}/v1/chat/completions" in r.error
    assert "pw@" not in r.error


# -- issue #11 item 9: a pixel-convention model with no resize rule is named at start ----------------
def test_pixel_model_without_resize_rule_warns_once(server, capsys):
    from mmrbench.adapters.image_encoding import ImagePrep

    m = OpenAIModel("Qwen/Qwen2.5-VL-7B-Instruct", base_url=server.base_url)
    assert capsys.readouterr().err == ""  # nothing at construction: a failing command prints one line
    m.generate([request(), request()])
    m.generate([request()])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: openai:Qwen/Qwen2.5-VL-7B-Instruct writes pixel boxes")
    assert 'resize = "smart"' in err[0]
    for m in (OpenAIModel("Qwen/Qwen2.5-VL-7B-Instruct", base_url=server.base_url, image_prep=ImagePrep(resize="smart")),
              OpenAIModel("internvl", base_url=server.base_url, convention="norm1000")):
        m.generate([request()])
    assert capsys.readouterr().err == ""
