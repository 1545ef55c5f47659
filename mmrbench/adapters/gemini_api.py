"""``gemini`` provider: Google Gemini through the official ``google-genai`` SDK.

``client.models.generate_content`` with the images as inline parts (``types.Part.from_bytes``) in
prompt order, then the instruction; the system prompt goes in ``system_instruction``. Stop status is
read from the SDK's enums: ``prompt_feedback.block_reason`` (prompt blocked) and the candidate's
``finish_reason`` (MAX_TOKENS -> truncated, SAFETY / PROHIBITED_CONTENT / BLOCKLIST / SPII / ... ->
refused). Thought parts (``part.thought``) are never taken as the answer. ``errors.APIError`` codes
429 and 5xx, and transport timeouts, are retryable; the SDK's own retries are off
(``HttpRetryOptions(attempts=1)``) so :mod:`mmrbench.adapters.retry` counts every attempt.

Gemini writes boxes as ``box_2d`` [ymin, xmin, ymax, xmax] normalised to 0-1000 (convention
``gemini``), independent of the image size sent. The benchmark prompt, however, asks for
``{'bbox_2d': [x1, y1, x2, y2]}``, and a model may follow either. So the convention is declared
*per answer key* (``box_conventions``, e.g. ``{box_2d = "gemini", bbox_2d = "norm1000"}`` in the card):
each answer's key picks its convention (recorded on the response as ``convention`` and
``box_key``), the keys used are counted per run (``describe()["box_keys_seen"]``), and an answer
whose boxes use an undeclared key, or mix keys of different conventions, is an error naming the
key -- never read under a guessed convention.

A 429's wait is often only in the error body (``google.rpc.RetryInfo.retryDelay``), not in a header:
both are read (:func:`mmrbench.adapters.retry.retry_delay_from_body`).
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import Counter
from typing import Any

from mmrbench.adapters.base import ImagePart, ModelAPI, Request, Response, TextPart, Usage, as_status
from mmrbench.adapters.image_encoding import ImagePrep, cached_prepare
from mmrbench.adapters.retry import RetryingAPIModel, RetryPolicy, parse_retry_after, retry_delay_from_body
from mmrbench.errors import ConfigError, require

#: finish reasons that mean the model (or its filters) declined to answer
REFUSED = {"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
           "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"}
OK = {"STOP", "FINISH_REASON_UNSPECIFIED"}
TRUNCATED = {"MAX_TOKENS"}

#: what a bare ``gemini:MODEL`` spec declares: Gemini's documented native key only
DEFAULT_BOX_CONVENTIONS = {"box_2d": "gemini"}
#: below this many output tokens a thinking model (2.5 Pro / Flash) often spends the whole budget thinking
THINKING_MIN_TOKENS = 4096


def box_keys(text: str | None) -> list[str]:
    """The box keys an answer writes coordinates under (``'bbox_2d': [x, ...]``), in order, from its
    ``<answer>`` part when it has one. Uses the parser's list of keys so what is counted is what is
    scored."""
    from mmrbench.parsing import BOX_KEYS

    if not text:
        return []
    m = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S | re.I)
    body = m.group(1) if m else text
    # a key counts where it holds coordinates ("key": [12, ...); a wrapper ("boxes": [{...}]) does not
    pat = (r"[\"']?\b(" + "|".join(re.escape(k) for k in sorted(BOX_KEYS, key=len, reverse=True))
           + r")\b[\"']?\s*:\s*\[\s*[-+]?\.?\d")
    return [k.lower() for k in re.findall(pat, body, re.I)]


def is_thinking_model(model: str) -> bool:
    low = model.lower()
    return "thinking" in low or bool(re.search(r"gemini-(2\.5|[3-9])", low))


def _name(enum_value: Any) -> str | None:
    if enum_value is None:
        return None
    return str(getattr(enum_value, "name", None) or getattr(enum_value, "value", enum_value)).upper()


def resolve_gemini_key(api_key_env: str | None, base_url: str | None = None) -> str:
    envs = [api_key_env] if api_key_env else []
    envs += [e for e in ("GEMINI_API_KEY", "GOOGLE_API_KEY") if e not in envs]
    for env in envs:
        key = os.environ.get(env or "", "").strip()
        if key:
            return key
    if base_url:
        return "EMPTY"  # a local stand-in or proxy
    raise ConfigError(f"environment variable {envs[0]} is not set: it holds the Gemini API key")


class GeminiModel(RetryingAPIModel, ModelAPI):
    provider = "gemini"
    convention = "gemini"
    max_concurrency = 8
    batch_size = 1

    def __init__(self, model: str, *, api_key_env: str | None = None, base_url: str | None = None,
                 convention: str | None = None, concurrency: int | None = None, timeout_s: float = 300.0,
                 retry: RetryPolicy | None = None, image_prep: ImagePrep | None = None,
                 thinking_budget: int | None = None, include_thoughts: bool = False, client: Any = None,
                 box_conventions: dict[str, str] | None = None, sampling: Any = None, **_ignored: Any):
        super().__init__(model)
        from mmrbench.coords import check_convention

        declared = dict(box_conventions) if box_conventions else dict(DEFAULT_BOX_CONVENTIONS)
        self.box_conventions = {str(k).lower(): check_convention(str(v)) for k, v in declared.items()}
        self.box_keys_seen: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self.api_key_env = api_key_env or "GEMINI_API_KEY"
        self.base_url = base_url
        self._init_api_settings(convention=convention, concurrency=concurrency, timeout_s=timeout_s, retry=retry,
                                image_prep=image_prep)
        self.thinking_budget = thinking_budget
        self.include_thoughts = include_thoughts
        max_tokens = getattr(sampling, "max_new_tokens", None)
        if (max_tokens is not None and max_tokens < THINKING_MIN_TOKENS and thinking_budget is None
                and is_thinking_model(model)):
            self.start_warning = (
                f"gemini:{model} thinks before answering and its thinking counts against "
                f"max_new_tokens={max_tokens}: answers may come back truncated and empty; use the model's "
                f"card (e.g. --model gemini-2.5-pro, 16384 tokens) or --max-new-tokens 16384")
        genai = require("google.genai", "api", "the gemini provider")
        from mmrbench.adapters.openai_api import quiet_http_logs
        quiet_http_logs()
        self._types = genai.types
        self._errors = require("google.genai.errors", "api", "the gemini provider")
        if client is not None:
            self._client = client
        else:
            key = resolve_gemini_key(api_key_env, base_url)
            http = self._types.HttpOptions(timeout=int(self.timeout_s * 1000), base_url=base_url,
                                           retry_options=self._types.HttpRetryOptions(attempts=1))
            self._client = genai.Client(api_key=key, http_options=http)

    # -- request mapping -------------------------------------------------------------------------
    def build_contents(self, request: Request) -> tuple[list[Any], str | None, list[list[int]]]:
        """(parts of the user turn, system instruction, sizes of the images sent)."""
        types = self._types
        system: list[str] = []
        parts: list[Any] = []
        sizes: list[list[int]] = []
        for m in request.messages:
            if m.role == "system":
                system.append(m.text)
                continue
            for p in m.parts:
                if isinstance(p, ImagePart):
                    data, mime, size = cached_prepare(p, self.image_prep, self.image_cache)
                    sizes.append([int(size[0]), int(size[1])])
                    parts.append(types.Part.from_bytes(data=data, mime_type=mime))
                elif isinstance(p, TextPart):
                    parts.append(types.Part.from_text(text=p.text))
        return parts, ("\n\n".join(system) if system else None), sizes

    def build_config(self, request: Request, system: str | None):
        types = self._types
        cfg = request.config
        kw: dict[str, Any] = {"max_output_tokens": cfg.max_new_tokens}
        if system:
            kw["system_instruction"] = system
        if cfg.temperature is not None:
            kw["temperature"] = cfg.temperature
        if cfg.top_p is not None:
            kw["top_p"] = cfg.top_p
        if cfg.top_k is not None:
            kw["top_k"] = cfg.top_k
        if cfg.seed is not None:
            kw["seed"] = cfg.seed
        if self.thinking_budget is not None or self.include_thoughts:
            kw["thinking_config"] = types.ThinkingConfig(thinking_budget=self.thinking_budget,
                                                         include_thoughts=self.include_thoughts or None)
        return types.GenerateContentConfig(**kw)

    # -- response mapping ------------------------------------------------------------------------
    @staticmethod
    def map_response(resp: Any) -> tuple[str | None, str, str | None, Usage | None]:
        usage = None
        um = getattr(resp, "usage_metadata", None)
        if um is not None:
            usage = Usage(int(um.prompt_token_count or 0),
                          int(um.candidates_token_count or 0) + int(getattr(um, "thoughts_token_count", 0) or 0))
        pf = getattr(resp, "prompt_feedback", None)
        block = _name(getattr(pf, "block_reason", None)) if pf is not None else None
        if block and block != "BLOCKED_REASON_UNSPECIFIED":
            return None, "refused", f"prompt blocked: {block}", usage
        cands = getattr(resp, "candidates", None) or []
        if not cands:
            return None, "error", "malformed response: no candidates", usage
        cand = cands[0]
        content = getattr(cand, "content", None)
        texts = [p.text for p in (getattr(content, "parts", None) or [])
                 if getattr(p, "text", None) and not getattr(p, "thought", False)]
        text = "".join(texts) if texts else None
        fr = _name(getattr(cand, "finish_reason", None))
        if fr is None or fr in OK:
            if text is None:
                return None, "error", "malformed response: candidate has no text", usage
            return text, "ok", None, usage
        if fr in TRUNCATED:
            return text, "truncated", None, usage
        if fr in REFUSED:
            return text, "refused", f"finish_reason {fr}", usage
        return text, "error", f"finish_reason {fr}", usage

    def _call(self, request: Request) -> Response:
        self.warn_once()
        t0 = time.perf_counter()
        try:
            parts, system, sizes = self.build_contents(request)
        except Exception as exc:
            return Response(None, "error", f"cannot encode image: {exc}")
        try:
            resp = self._client.models.generate_content(model=self.model, contents=parts,
                                                        config=self.build_config(request, system))
            text, status, err, usage = self.map_response(resp)
            out = Response(text, as_status(status), err, usage, time.perf_counter() - t0, sizes)
            return self.apply_box_convention(out)
        except self._errors.APIError as exc:
            code = int(getattr(exc, "code", 0) or 0)
            transient = code in (408, 429) or code >= 500
            headers = getattr(getattr(exc, "response", None), "headers", None)
            msg = " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
            wait = None
            if transient:
                wait = parse_retry_after(headers)
                if wait is None:
                    wait = retry_delay_from_body(getattr(exc, "details", None))
            out = Response(None, "error", f"HTTP {code} {getattr(exc, 'status', '') or ''}: {msg}".strip(), None,
                           time.perf_counter() - t0, sizes, retryable=transient, retry_after_s=wait)
            out.rate_limited = code == 429
            return out
        except Exception as exc:
            transient = _is_transport_error(exc)
            kind = "transport error" if transient else "malformed response"
            return Response(None, "error", f"{kind} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})",
                            None, time.perf_counter() - t0, sizes, retryable=transient)

    def apply_box_convention(self, resp: Response) -> Response:
        """Pick the response's convention from the box key its answer uses (see the module doc)."""
        if resp.status not in ("ok", "truncated"):
            return resp
        keys = box_keys(resp.text)
        with self._count_lock:
            for k in dict.fromkeys(keys):
                self.box_keys_seen[k] += 1
            if not keys:
                self.box_keys_seen["(none)"] += 1
        if not keys:
            return resp
        undeclared = sorted(set(k for k in keys if k not in self.box_conventions))
        declared = ", ".join(f"{k}={v}" for k, v in sorted(self.box_conventions.items()))
        if undeclared:
            resp.status, resp.error = "error", (f"answer writes boxes under '{undeclared[0]}', whose convention is "
                                                f"not declared (declared: {declared}); add it to the card's "
                                                f"box_conventions option")
            return resp
        convs = {self.box_conventions[k] for k in keys}
        if len(convs) > 1:
            resp.status, resp.error = "error", (f"answer mixes box keys of different conventions "
                                                f"({', '.join(sorted(set(keys)))}; declared: {declared})")
            return resp
        resp.convention = convs.pop()
        resp.box_key = keys[0]
        return resp

    def box_key_summary(self) -> str | None:
        """One line: how many answers used each box key in this run (None before any answer)."""
        with self._count_lock:
            seen = dict(sorted(self.box_keys_seen.items()))
        if not seen:
            return None
        parts = [f"{k} {n}" + (f" (read as {self.box_conventions[k]})" if k in self.box_conventions else
                                (" (undeclared: errors)" if k != "(none)" else "")) for k, n in seen.items()]
        return f"gemini: box keys in answers: {', '.join(parts)}"

    def close(self) -> None:
        line = self.box_key_summary()
        if line:
            print(line, file=sys.stderr)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["box_conventions"] = dict(self.box_conventions)
        if self.box_keys_seen:
            d["box_keys_seen"] = dict(sorted(self.box_keys_seen.items()))
        d["api_key_env"] = self.api_key_env
        if self.base_url:
            from mmrbench.adapters.server_errors import redact_url
            d["base_url"] = redact_url(self.base_url)
        if self.thinking_budget is not None:
            d["thinking_budget"] = self.thinking_budget
        return d


def _is_transport_error(exc: BaseException) -> bool:
    """Timeouts and dropped connections from whichever HTTP library the SDK uses."""
    for mod in ("httpx", "httpx2"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        base = getattr(m, "TransportError", None)
        if base is not None and isinstance(exc, base):
            return True
    return isinstance(exc, (TimeoutError, ConnectionError))
