"""What a server said when a request failed: status, its own message (bounded, keys blanked) and the URL.

An HTTP 400/422 recorded as ``Error code: 400`` hides the reason the server gave (``{"detail": ...}``,
``{"error": {"message": ...}}``); a refused connection that does not name the URL hides which server
was meant. These helpers keep all three, and never let an API key reach a predictions line.
"""
from __future__ import annotations

import re
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str | None) -> str | None:
    """Drop user:password@ from a URL before it goes into a result or log."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


MAX_SERVER_MESSAGE = 300
_KEY_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "***"),            # OpenAI-style keys
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), "***"),          # Google API keys
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-~+/=]{8,}"), r"\1 ***"),
    (re.compile(r"(?i)\b(api[_-]?key|key|token|access_token)(\s*[=:]\s*[\"']?)[A-Za-z0-9._\-~+/]{8,}"), r"\1\2***"),
)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with API keys blanked: the key in use, and anything shaped like a key."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    for pat, repl in _KEY_PATTERNS:
        text = pat.sub(repl, text)
    return text


def safe_url(url: str) -> str:
    """A URL fit for a prediction line: no credentials, no query string (keys travel there)."""
    parts = urlsplit(redact_url(url) or "")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def request_url(exc: BaseException) -> str | None:
    req = getattr(exc, "request", None)
    url = getattr(req, "url", None)
    return safe_url(str(url)) if url is not None else None


def server_message(body: Any, text: str | None = None) -> str | None:
    """The server's own explanation from an error body: FastAPI/vLLM ``{"detail": ...}``, OpenAI
    ``{"error": {"message": ...}}``, ``{"message": ...}``, or the raw text."""
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
        elif isinstance(err, str):
            msg = err
        if msg is None:
            msg = body.get("detail", body.get("message"))
    elif isinstance(body, (str, list)):
        msg = body
    if msg is None and text:
        msg = text
    if msg is None:
        return None
    if not isinstance(msg, str):
        import json
        try:
            msg = json.dumps(msg, ensure_ascii=False)
        except (TypeError, ValueError):
            msg = str(msg)
    msg = " ".join(msg.split())
    return msg or None


def status_error_text(exc: Any, code: int, secrets: Sequence[str] = (), fallback_url: str | None = None) -> str:
    """``HTTP 400 BadRequestError from URL: <server's message>``, bounded and with keys scrubbed."""
    resp = getattr(exc, "response", None)
    raw = None
    try:
        raw = resp.text if resp is not None else None
    except Exception:  # noqa: BLE001 - a streamed body that cannot be read
        raw = None
    msg = server_message(getattr(exc, "body", None), raw) or short_error(exc)
    msg = scrub(msg, secrets)
    if len(msg) > MAX_SERVER_MESSAGE:
        msg = msg[:MAX_SERVER_MESSAGE] + "..."
    url = request_url(exc) or fallback_url
    where = f" from {url}" if url else ""
    return f"HTTP {code} {type(exc).__name__}{where}: {msg}"


#: model-name fragments of families that ground in pixels of an image the *server* resizes


def short_error(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split())
    return msg[:limit]
