"""Gemini request/response mapping against google-genai's own types (no network: a fake client)."""
from __future__ import annotations

import pytest
from PIL import Image

genai = pytest.importorskip("google.genai")
from google.genai import errors, types  # noqa: E402

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart  # noqa: E402
from mmrbench.adapters.gemini_api import GeminiModel  # noqa: E402
from mmrbench.adapters.retry import FAST  # noqa: E402
from mmrbench.errors import ConfigError  # noqa: E402


class FakeModels:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def generate_content(self, *, model, contents, config):
        self.calls.append({"model": model, "contents": contents, "config": config})
        out = self.outcomes.pop(0)
        if isinstance(out, BaseException):
            raise out
        return out


class FakeClient:
    def __init__(self, outcomes):
        self.models = FakeModels(outcomes)


def response(text="<answer>No.</answer>", finish="STOP", *, thought=None, block=None, candidates=True):
    """A GenerateContentResponse built from the SDK's own types, as the API returns it."""
    parts = []
    if thought:
        parts.append(types.Part(text=thought, thought=True))
    if text is not None:
        parts.append(types.Part(text=text))
    cands = [types.Candidate(content=types.Content(role="model", parts=parts),
                             finish_reason=types.FinishReason(finish) if finish else None, index=0)] if candidates else []
    return types.GenerateContentResponse(
        candidates=cands,
        prompt_feedback=types.GenerateContentResponsePromptFeedback(block_reason=types.BlockedReason(block)) if block else None,
        usage_metadata=types.GenerateContentResponseUsageMetadata(prompt_token_count=812, candidates_token_count=40,
                                                                  thoughts_token_count=300, total_token_count=1152),
    )


def request():
    ref, query = Image.new("RGB", (64, 48), "white"), Image.new("RGB", (80, 60), "red")
    return Request("s1", [Message("system", "SYSTEM TEXT"),
                          Message("user", [ImagePart(ref), ImagePart(query), TextPart("inspect")])],
                   GenerationConfig(max_new_tokens=777, temperature=0.0, top_p=0.9, seed=3))


def model(outcomes, **kw):
    return GeminiModel("gemini-2.5-pro", client=FakeClient(outcomes), retry=FAST, **kw)


def test_request_mapping():
    m = model([response()], thinking_budget=128)
    [r] = m.generate([request()])
    assert r.status == "ok" and r.text == "<answer>No.</answer>"
    assert r.image_sizes == [[64, 48], [80, 60]]
    assert r.usage.prompt_tokens == 812 and r.usage.completion_tokens == 340  # thoughts are billed output
    call = m._client.models.calls[0]
    assert call["model"] == "gemini-2.5-pro"
    parts = call["contents"]
    assert [p.inline_data.mime_type if p.inline_data else "text" for p in parts] == ["image/png", "image/png", "text"]
    sizes = [Image.open(__import__("io").BytesIO(p.inline_data.data)).size for p in parts[:2]]
    assert sizes == [(64, 48), (80, 60)]  # reference first, query second
    assert parts[2].text == "inspect"
    cfg = call["config"]
    assert isinstance(cfg, types.GenerateContentConfig)
    assert cfg.system_instruction == "SYSTEM TEXT"
    assert (cfg.max_output_tokens, cfg.temperature, cfg.top_p, cfg.seed) == (777, 0.0, 0.9, 3)
    assert cfg.thinking_config.thinking_budget == 128
    assert m.convention == "gemini"


@pytest.mark.parametrize("finish,status", [("STOP", "ok"), ("MAX_TOKENS", "truncated"), ("SAFETY", "refused"),
                                           ("PROHIBITED_CONTENT", "refused"), ("BLOCKLIST", "refused"),
                                           ("SPII", "refused"), ("RECITATION", "refused"),
                                           ("MALFORMED_FUNCTION_CALL", "error"), ("OTHER", "error")])
def test_finish_reason_enum(finish, status):
    [r] = model([response("<answer>Yes.</answer>", finish)]).generate([request()])
    assert r.status == status
    if status != "ok":
        assert r.status != "ok" and (status == "truncated" or finish in r.error)


def test_prompt_blocked_and_thoughts_and_empty():
    [r] = model([response(None, None, block="PROHIBITED_CONTENT", candidates=False)]).generate([request()])
    assert r.status == "refused" and "PROHIBITED_CONTENT" in r.error
    [r] = model([response("<answer>No.</answer>", thought="secret chain of thought")]).generate([request()])
    assert r.text == "<answer>No.</answer>"  # thought parts are not the answer
    [r] = model([response(candidates=False)]).generate([request()])
    assert r.status == "error" and "no candidates" in r.error


def _api_error(code, headers=None):
    import httpx
    resp = httpx.Response(code, headers=headers or {}, json={"error": {"code": code, "message": "x", "status": "S"}})
    cls = errors.ClientError if code < 500 else errors.ServerError
    return cls(code, {"error": {"code": code, "message": "scripted", "status": "S"}}, resp)


def test_transient_errors_retried_final_errors_not():
    m = model([_api_error(429, {"Retry-After": "0"}), _api_error(503), response()])
    [r] = m.generate([request()])
    assert r.status == "ok" and r.attempts == 3 and len(m._client.models.calls) == 3
    m = model([_api_error(400), response()])
    [r] = m.generate([request()])
    assert r.status == "error" and "400" in r.error and len(m._client.models.calls) == 1
    m = model([_api_error(403)])
    [r] = m.generate([request()])
    assert r.status == "error" and not r.retryable
    m = model([_api_error(500)] * 4)
    [r] = m.generate([request()])
    assert r.status == "error" and len(m._client.models.calls) == FAST.max_attempts  # bounded


def test_transport_timeout_is_retryable():
    import httpx
    m = model([httpx.ReadTimeout("slow"), response()])
    [r] = m.generate([request()])
    assert r.status == "ok" and len(m._client.models.calls) == 2


def test_real_client_construction_needs_key(monkeypatch):
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        GeminiModel("gemini-2.5-pro")
    monkeypatch.setenv("GEMINI_API_KEY", "k-123-secret")
    m = GeminiModel("gemini-2.5-pro", timeout_s=5)
    assert "k-123-secret" not in repr(m.describe())


# -- issue #16 item 7 --------------------------------------------------------------------------------
def test_body_only_429_retry_delay_is_honoured():
    """Gemini puts a 429's wait in the body (google.rpc.RetryInfo), with no Retry-After header."""
    import time

    import httpx
    body = {"error": {"code": 429, "message": "Quota exceeded for generate_content_free_tier_requests",
                      "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                                  {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.4s"}]}}
    err = errors.ClientError(429, body, httpx.Response(429, json=body))
    m = model([err, response()])
    t0 = time.perf_counter()
    [r] = m.generate([request()])
    assert r.status == "ok" and r.attempts == 2 and time.perf_counter() - t0 >= 0.4
    first = model([err])._call(request())
    assert first.retryable and first.retry_after_s == pytest.approx(0.4)


def test_retry_delay_forms():
    from mmrbench.adapters.retry import retry_delay_from_body

    info = "type.googleapis.com/google.rpc.RetryInfo"
    assert retry_delay_from_body({"error": {"details": [{"@type": info, "retryDelay": "37s"}]}}) == 37.0
    assert retry_delay_from_body({"details": [{"@type": info, "retryDelay": "1.500s"}]}) == 1.5
    assert retry_delay_from_body({"details": [{"@type": info, "retryDelay": {"seconds": 2, "nanos": 5e8}}]}) == 2.5
    assert retry_delay_from_body({"error": {"details": [{"@type": info, "retryDelay": "soon"}]}}) is None
    assert retry_delay_from_body({"error": {"message": "no details"}}) is None and retry_delay_from_body("x") is None


def test_box_convention_is_declared_per_answer_key_and_counted():
    conv = {"box_2d": "gemini", "bbox_2d": "norm1000"}
    native = "<answer>Yes. {'box_2d': [100, 200, 300, 400], 'label': 'scratch'}</answer>"
    prompt_key = "<answer>Yes. {'bbox_2d': [200, 100, 400, 300], 'label': 'scratch'}</answer>"
    other = "<answer>Yes. {'bbox': [1, 2, 3, 4]}</answer>"
    mixed = "<answer>Yes. {'bbox_2d': [1, 2, 3, 4]}, {'box_2d': [1, 2, 3, 4]}</answer>"
    m = model([response(native), response(prompt_key), response(other), response(mixed),
               response("<answer>No.</answer>")], box_conventions=conv)
    out = [m.generate([request()])[0] for _ in range(5)]
    assert (out[0].status, out[0].convention, out[0].box_key) == ("ok", "gemini", "box_2d")
    assert (out[1].status, out[1].convention, out[1].box_key) == ("ok", "norm1000", "bbox_2d")
    assert out[2].status == "error" and "'bbox'" in out[2].error and "not declared" in out[2].error
    assert out[3].status == "error" and "mixes box keys" in out[3].error
    assert out[4].status == "ok" and out[4].convention is None
    d = m.describe()
    assert d["box_conventions"] == conv
    assert d["box_keys_seen"] == {"(none)": 1, "bbox": 1, "bbox_2d": 2, "box_2d": 2}
    # a bare spec declares only Gemini's documented key: the prompt's key is not guessed
    [r] = model([response(prompt_key)]).generate([request()])
    assert r.status == "error" and "'bbox_2d'" in r.error


def test_the_card_declares_both_keys():
    from mmrbench.cards import parse_spec
    card = parse_spec("gemini-2.5-pro")
    assert card.options["box_conventions"] == {"box_2d": "gemini", "bbox_2d": "norm1000"}


def test_thinking_model_with_a_small_budget_warns(capsys):
    m = model([response(), response()], sampling=GenerationConfig(max_new_tokens=512))
    assert capsys.readouterr().err == ""  # nothing at construction: a failing command prints one line
    m.generate([request()]), m.generate([request()])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_new_tokens=512" in err[0] and "--max-new-tokens" in err[0]
    for m in (model([response()], sampling=GenerationConfig(max_new_tokens=16384)),
              model([response()], sampling=GenerationConfig(max_new_tokens=512), thinking_budget=0),
              GeminiModel("gemini-2.0-flash", client=FakeClient([response()]), retry=FAST,
                          sampling=GenerationConfig(max_new_tokens=512))):
        m.generate([request()])
    assert capsys.readouterr().err == ""


def test_box_key_counts_printed_at_close(capsys):
    m = model([response("<answer>Yes. {'bbox_2d': [1, 2, 3, 4]}</answer>"), response()],
              box_conventions={"box_2d": "gemini", "bbox_2d": "norm1000"})
    m.generate([request()]), m.generate([request()])
    m.close()
    assert capsys.readouterr().err.strip() == \
        "gemini: box keys in answers: (none) 1, bbox_2d 1 (read as norm1000)"


def test_box_keys_count_only_keys_holding_coordinates():
    from mmrbench.adapters.gemini_api import box_keys

    assert box_keys('<answer>Yes. {"boxes": [{"box_2d": [10, 20, 30, 40], "label": "x"}]}</answer>') == ["box_2d"]
    assert box_keys("<think>{'bbox': [1, 2, 3, 4]}</think><answer>Yes. {'box_2d': [ 1.5, 2, 3, 4]}</answer>") == ["box_2d"]
    assert box_keys("<answer>No.</answer>") == [] and box_keys(None) == []
