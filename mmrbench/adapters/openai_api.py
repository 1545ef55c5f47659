"""``openai`` provider: OpenAI and every OpenAI-compatible chat-completions server.

One class serves api.openai.com, a local ``vllm serve`` / LMDeploy ``api_server`` / SGLang, and
DashScope's compatible mode (Qwen QVQ-Max), selected by ``base_url``. Images travel as base64 data
URLs in the order the prompt lists them (reference first, query second). Stop status comes from the
SDK's fields (``finish_reason``, ``message.refusal``), failures from the SDK's exception classes,
never from error strings. The SDK's own retry loop is switched off (``max_retries=0``) so every
attempt goes through :mod:`mmrbench.adapters.retry`, which honours Retry-After.

The API key is read from the environment (``OPENAI_API_KEY`` or the card's ``api_key_env``) and is
never logged or returned by :meth:`describe`. A custom server that needs no key gets a dummy one.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from mmrbench.adapters.base import (GenerationConfig, ImagePart, ModelAPI, Request, Response, TextPart, as_status,
                                    Usage)
from mmrbench.adapters.image_encoding import ImagePrep, cached_prepare, data_url_bytes
from mmrbench.adapters.openai_body import body_pieces, placeholder
from mmrbench.adapters.retry import RetryingAPIModel, RetryPolicy, parse_retry_after
from mmrbench.adapters.server_errors import redact_url, request_url, safe_url, scrub, short_error, status_error_text
from mmrbench.errors import ConfigError, require

OFFICIAL_HOST = "api.openai.com"
DUMMY_KEY = "EMPTY"
#: requests in flight per SDK client (HTTP connection pool); more concurrency gets more clients
CONNECTIONS_PER_CLIENT = 16  # what vLLM / LMDeploy / SGLang accept when started without --api-key


def quiet_http_logs() -> None:
    """The HTTP libraries log every request at INFO; a 100k-sample run would print 100k lines. Keep
    them at WARNING unless the user asked for debug output (``mmrbench -v``)."""
    import logging
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("httpx", "httpx2", "openai", "google_genai"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(logging.WARNING)


def is_official(base_url: str | None) -> bool:
    if not base_url:
        return True
    host = (urlsplit(base_url).hostname or "").lower()
    return host == OFFICIAL_HOST or host.endswith("." + OFFICIAL_HOST)


def resolve_api_key(api_key_env: str | None, base_url: str | None, require_key: bool | None = None) -> str:
    """The key from the environment; a clear error when the endpoint needs one and it is unset."""
    env = api_key_env or "OPENAI_API_KEY"
    key = os.environ.get(env, "").strip()
    if key:
        return key
    needed = is_official(base_url) if require_key is None else require_key
    if needed:
        where = base_url or f"https://{OFFICIAL_HOST}/v1"
        raise ConfigError(f"environment variable {env} is not set: it holds the API key for {where}")
    return DUMMY_KEY


class OpenAIModel(RetryingAPIModel, ModelAPI):
    provider = "openai"
    convention = "pixel"
    max_concurrency = 8
    batch_size = 1

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str | None = None,
                 require_key: bool | None = None, reasoning: bool = False, reasoning_effort: str | None = None,
                 convention: str | None = None, concurrency: int | None = None, timeout_s: float = 300.0,
                 retry: RetryPolicy | None = None, image_prep: ImagePrep | None = None,
                 image_detail: str | None = None, stream: bool = False, extra_body: dict | None = None,
                 client: Any = None, **_ignored: Any):
        super().__init__(model)
        self.base_url = base_url
        self.api_key_env = api_key_env or "OPENAI_API_KEY"
        self.reasoning = bool(reasoning)
        self.reasoning_effort = reasoning_effort
        self._init_api_settings(convention=convention, concurrency=concurrency, timeout_s=timeout_s, retry=retry,
                                image_prep=image_prep)
        self.image_detail = image_detail
        self.stream = bool(stream)
        self.extra_body = dict(extra_body or {})
        if client is not None:
            self._clients = [client]
        else:
            openai = require("openai", "api", "the openai provider")
            key = resolve_api_key(api_key_env, base_url, require_key)
            shards = max(1, -(-self.max_concurrency // CONNECTIONS_PER_CLIENT))
            width = -(-self.max_concurrency // shards)
            self._clients = [self._sdk_client(openai, key, base_url, width) for _ in range(shards)]
        self._thread_client = threading.local()
        self._next_client = itertools.count()
        self._openai = require("openai", "api", "the openai provider")
        #: post pre-assembled bodies through the SDK's client (a test double without ``post`` gets
        #: create()): the keyword the SDK's ``post`` takes raw bytes in, or None
        self._raw_post = _raw_body_keyword(self._clients[0], self._openai)
        self._secrets = [k for k in (os.environ.get(self.api_key_env, "").strip(),) if len(k) >= 8]
        quiet_http_logs()
        self.start_warning = resize_warning(self.model, self.convention, self.image_prep)

    def _sdk_client(self, openai: Any, key: str, base_url: str | None, width: int) -> Any:
        http = None
        limits = getattr(openai, "DEFAULT_CONNECTION_LIMITS", None)
        if limits is not None and width > (limits.max_keepalive_connections or 0):
            # keep one pooled connection per request in flight (the SDK keeps 100): past that,
            # every request beyond the pool would open a new TCP connection
            http = openai.DefaultHttpxClient(limits=type(limits)(
                max_connections=max(width, limits.max_connections or 0), max_keepalive_connections=width))
        return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=self.timeout_s, http_client=http)

    def _http(self) -> Any:
        """This worker thread's SDK client.

        Why several: the HTTP connection pool rescans all its connections under one lock twice per
        request (to hand one out and to take it back), so at 128 requests in flight one pool costs
        about a millisecond of serialised CPU per request. Each worker thread keeps to one of
        ``ceil(concurrency / 16)`` clients, so a pool never holds more than 16 connections."""
        client = getattr(self._thread_client, "client", None)
        if client is None:
            client = self._clients[next(self._next_client) % len(self._clients)]
            self._thread_client.client = client
        return client

    # -- request mapping -------------------------------------------------------------------------
    def build_messages(self, request: Request, raw_images: list[tuple[bytes, bytes]] | None = None
                       ) -> tuple[list[dict], list[list[int]]]:
        """Chat messages in the OpenAI wire format plus the (width, height) of each image sent.

        With ``raw_images`` (a list to fill), each image URL in the messages is a placeholder
        (:func:`~mmrbench.adapters.openai_body.placeholder`) and the data URL itself, as bytes, is appended to the list: the body
        is then assembled by :func:`~mmrbench.adapters.openai_body.body_pieces`."""
        out: list[dict] = []
        sizes: list[list[int]] = []
        for m in request.messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            if m.role != "user" and all(isinstance(p, TextPart) for p in m.content):
                out.append({"role": m.role, "content": m.text})
                continue
            parts: list[dict] = []
            for p in m.content:
                if isinstance(p, ImagePart):
                    url, _mime, size = cached_prepare(p, self.image_prep, self.image_cache, data_url_bytes)
                    sizes.append([int(size[0]), int(size[1])])
                    if raw_images is not None:
                        image_url: dict[str, Any] = {"url": placeholder(len(raw_images))}
                        raw_images.append(url)
                    else:
                        image_url = {"url": (url[0] + url[1]).decode("ascii")}
                    if self.image_detail:
                        image_url["detail"] = self.image_detail
                    parts.append({"type": "image_url", "image_url": image_url})
                else:
                    parts.append({"type": "text", "text": p.text})
            out.append({"role": m.role, "content": parts})
        return out, sizes

    def request_kwargs(self, request: Request, messages: list[dict]) -> dict[str, Any]:
        cfg: GenerationConfig = request.config
        kw: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.reasoning:
            # o-series / GPT-5: the budget covers hidden reasoning too; sampling knobs are rejected
            kw["max_completion_tokens"] = cfg.max_new_tokens
            if self.reasoning_effort:
                kw["reasoning_effort"] = self.reasoning_effort
        else:
            kw["max_tokens"] = cfg.max_new_tokens
            if cfg.temperature is not None:
                kw["temperature"] = cfg.temperature
            if cfg.top_p is not None:
                kw["top_p"] = cfg.top_p
        if cfg.seed is not None:
            kw["seed"] = cfg.seed
        extra = dict(self.extra_body)
        if not is_official(self.base_url):
            # vLLM / SGLang / LMDeploy accept these sampling extensions; OpenAI rejects them
            if cfg.min_p is not None and not self.reasoning:
                extra.setdefault("min_p", cfg.min_p)
            if cfg.top_k is not None and not self.reasoning:
                extra.setdefault("top_k", cfg.top_k)
        if extra:
            kw["extra_body"] = extra
        if self.stream:
            kw["stream"] = True
            kw["stream_options"] = {"include_usage": True}
        return kw

    # -- response mapping ------------------------------------------------------------------------
    @staticmethod
    def map_completion(completion: Any) -> tuple[str | None, str, str | None, Usage | None]:
        """(text, status, error, usage) from a ChatCompletion; a body without choices is an error."""
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            return None, "error", "malformed response: no choices", None
        choice = choices[0]
        msg = getattr(choice, "message", None)
        if msg is None:
            return None, "error", "malformed response: choice has no message", None
        text = getattr(msg, "content", None)
        if text is not None and not isinstance(text, str):
            return None, "error", "malformed response: message content is not text", None
        refusal = getattr(msg, "refusal", None)
        usage = _usage(getattr(completion, "usage", None))
        status, err = _status(getattr(choice, "finish_reason", None), refusal)
        if status == "ok" and text is None:
            return None, "error", "malformed response: no message content", usage
        if status == "refused" and text is None and refusal:
            text = None
        return text, status, err, usage

    def _collect_stream(self, stream: Any, reasoning: list[str] | None = None
                        ) -> tuple[str | None, str, str | None, Usage | None]:
        texts: list[str] = []
        refusal: list[str] = []
        finish = None
        usage = None
        for chunk in stream:
            if getattr(chunk, "usage", None):
                usage = _usage(chunk.usage)
            for ch in getattr(chunk, "choices", None) or []:
                delta = getattr(ch, "delta", None)
                if delta is not None:
                    if getattr(delta, "content", None):
                        texts.append(delta.content)
                    if getattr(delta, "refusal", None):
                        refusal.append(delta.refusal)
                    rc = getattr(delta, "reasoning_content", None)
                    if isinstance(rc, str) and rc and reasoning is not None:
                        reasoning.append(rc)
                if getattr(ch, "finish_reason", None):
                    finish = ch.finish_reason
        status, err = _status(finish, "".join(refusal) or None)
        text = "".join(texts) if texts else None
        if status == "ok" and text is None:
            return None, "error", "malformed response: stream carried no content", usage
        return text, status, err, usage

    def _call(self, request: Request) -> Response:
        self.warn_once()
        oa = self._openai
        t0 = time.perf_counter()
        raw: list[tuple[bytes, bytes]] | None = [] if self._raw_post is not None else None
        try:
            messages, sizes = self.build_messages(request, raw)
        except Exception as exc:  # an image that cannot be encoded is this sample's problem only
            return Response(None, "error", f"cannot encode image: {exc}")
        try:
            kw = self.request_kwargs(request, messages)
            if raw is not None:
                # the SDK's own POST (headers, auth, error classes, response models) with a body
                # assembled here: json.dumps over 8 MB of base64 costs more CPU than all the rest
                from openai.types.chat import ChatCompletion, ChatCompletionChunk
                # an explicit Content-Length: the HTTP client then sends the pieces as one body of that
                # length (the same bytes on the wire), never chunked
                pieces = body_pieces(kw, raw)
                result = self._http().post("/chat/completions", content=pieces, cast_to=ChatCompletion,
                                           options={"headers": {"Content-Length": str(sum(map(len, pieces)))}},
                                           stream=self.stream, stream_cls=oa.Stream[ChatCompletionChunk])
            else:
                result = self._http().chat.completions.create(**kw)
            reasoning: list[str] = []
            if self.stream:
                text, status, err, usage = self._collect_stream(result, reasoning)
            else:
                text, status, err, usage = self.map_completion(result)
                reasoning.append(_reasoning_of(result))
            resp = Response(text, as_status(status), err, usage, time.perf_counter() - t0, sizes)
            if any(reasoning):
                # servers that split reasoning from the answer (DashScope QVQ, vLLM reasoning parsers):
                # kept beside the answer for inspection, never parsed for the decision
                resp.reasoning = "".join(r for r in reasoning if r)
            return resp
        except oa.APITimeoutError:
            return Response(None, "error", f"timeout after {self.timeout_s:g} s", None,
                            time.perf_counter() - t0, sizes, retryable=True)
        except oa.APIConnectionError as exc:
            url = request_url(exc) or self._endpoint()
            return Response(None, "error", f"connection error to {url}: {scrub(short_error(exc), self._secrets)}", None,
                            time.perf_counter() - t0, sizes, retryable=True)
        except oa.APIStatusError as exc:
            code = int(getattr(exc, "status_code", 0) or 0)
            headers = getattr(getattr(exc, "response", None), "headers", None)
            transient = code in (408, 409, 429) or code >= 500
            resp = Response(None, "error", status_error_text(exc, code, self._secrets, self._endpoint()), None,
                            time.perf_counter() - t0, sizes, retryable=transient,
                            retry_after_s=parse_retry_after(headers) if transient else None)
            resp.rate_limited = code == 429
            return resp
        except Exception as exc:  # malformed bodies, validation errors: final for this attempt
            return Response(None, "error", f"malformed response ({type(exc).__name__}: {short_error(exc)})", None,
                            time.perf_counter() - t0, sizes)

    def _endpoint(self) -> str:
        return safe_url((self.base_url or f"https://{OFFICIAL_HOST}/v1").rstrip("/") + "/chat/completions")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"base_url": redact_url(self.base_url) or f"https://{OFFICIAL_HOST}/v1",
                  "api_key_env": self.api_key_env, "reasoning": self.reasoning})
        if self.reasoning_effort:
            d["reasoning_effort"] = self.reasoning_effort
        if self.image_prep.resize != "none":
            d["image_resize"] = {"mode": self.image_prep.resize, "max_side": self.image_prep.max_side,
                                 "min_pixels": self.image_prep.min_pixels, "max_pixels": self.image_prep.max_pixels}
        return d

    def close(self) -> None:
        for client in self._clients:
            close = getattr(client, "close", None)
            if callable(close):
                close()


#: model names whose servers resize images themselves (Qwen-VL family: smart_resize)
_SERVER_RESIZING = ("qwen2-vl", "qwen2.5-vl", "qwen2_5_vl", "qwen2_vl", "qvq", "qwen-vl", "qwen3-vl")


def resize_warning(model: str, convention: str, prep: ImagePrep) -> str | None:
    """One line when a pixel-convention model gets images with no client-side resize rule.

    Boxes in ``pixel`` are read in the frame of the image as sent; the harness records the size it
    sent, but a server that resizes again (every Qwen-VL server does: smart_resize to multiples of 28
    within max_pixels) makes the model answer in a frame nobody recorded, and boxes end up off by the
    resize factor. The fix is a resize rule on the client, which then sends the image already in the
    model's frame.
    """
    if convention != "pixel" or prep.resize != "none":
        return None
    low = model.lower()
    if any(k in low for k in _SERVER_RESIZING):
        how = ('add image = { resize = "smart", min_pixels = 3136, max_pixels = 1003520 } (the server\'s '
               'limits) to the model card')
    else:
        how = ('if the server resizes images, add a resize rule to the model card (image = { resize = "smart" '
               'or "max_side", ... }) so the frame the model answers in is the one recorded')
    return (f"openai:{model} writes pixel boxes but has no image resize rule: sizes are recorded as sent "
            f"(original), so a server-side resize shifts every box; {how}")


def _raw_body_keyword(client: Any, openai: Any) -> str | None:
    if not isinstance(client, openai.OpenAI):
        return None
    import inspect
    try:
        params = inspect.signature(client.post).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return None
    # older SDKs (1.x) JSON-encode whatever ``body`` holds: they keep the plain create() path
    return "content" if "content" in params else None


def _reasoning_of(completion: Any) -> str:
    try:
        rc = getattr(completion.choices[0].message, "reasoning_content", None)
    except (AttributeError, IndexError, TypeError):
        return ""
    return rc if isinstance(rc, str) else ""


def _status(finish_reason: Any, refusal: Any) -> tuple[str, str | None]:
    fr = getattr(finish_reason, "value", finish_reason)
    if refusal:
        return "refused", f"refusal: {str(refusal)[:200]}"
    if fr == "length":
        return "truncated", None
    if fr == "content_filter":
        return "refused", "content_filter"
    return "ok", None


def _usage(u: Any) -> Usage | None:
    if u is None:
        return None
    try:
        return Usage(int(getattr(u, "prompt_tokens", 0) or 0), int(getattr(u, "completion_tokens", 0) or 0))
    except (TypeError, ValueError):
        return None
