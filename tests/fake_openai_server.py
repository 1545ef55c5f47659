"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, in a thread, for tests.

Real HTTP over loopback, so the official ``openai`` SDK is exercised end to end (URL joining,
headers, JSON bodies, timeouts, error classes from status codes). Reusable by any test::

    with FakeOpenAIServer(responder=lambda req: Reply("No.")) as srv:
        srv.enqueue(Reply(status=429, headers={"Retry-After": "0"}))   # next request only
        client = OpenAI(base_url=srv.base_url, api_key="x")
        ...
        srv.requests  # every request received, with decoded images

A *responder* maps each :class:`RecordedRequest` to a :class:`Reply` (or a plain string); queued
replies are served first, FIFO, whatever the request. A reply can carry a status code, headers,
a delay (to provoke client timeouts or to emulate model latency), a raw body (malformed answers),
a finish reason, a refusal, usage. ``stream: true`` requests get Server-Sent Events chunks.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union


@dataclass
class Reply:
    text: str | None = "No."
    finish_reason: str | None = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes | None = None  # raw body instead of a completion (malformed answers, error payloads)
    refusal: str | None = None
    usage: dict[str, int] | None = None
    reasoning_content: str | None = None


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: bytes
    time: float
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (mime, encoded bytes) in order

    @property
    def messages(self) -> list[dict]:
        return (self.body or {}).get("messages", [])

    @property
    def system(self) -> str | None:
        for m in self.messages:
            if m.get("role") in ("system", "developer"):
                c = m.get("content")
                return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
        return None

    @property
    def user_text(self) -> str:
        out = []
        for m in self.messages:
            if m.get("role") == "user":
                c = m.get("content")
                out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c if p.get("type") == "text"))
        return "\n".join(out)

    def pil_images(self):
        from PIL import Image
        return [Image.open(io.BytesIO(b)).convert("RGB") for _, b in self.images]

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        return [im.size for im in self.pil_images()]

    @property
    def image_digests(self) -> list[str]:
        """sha256 of each image's decoded RGB pixels: identifies a sample whatever the encoding."""
        return [pixel_digest(im) for im in self.pil_images()]


def pixel_digest(image) -> str:
    im = image.convert("RGB")
    return hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()


Responder = Callable[[RecordedRequest], Union[Reply, str]]


def _extract_images(body: dict | None) -> list[tuple[str, bytes]]:
    out = []
    for m in (body or {}).get("messages", []) if isinstance(body, dict) else []:
        c = m.get("content") if isinstance(m, dict) else None
        if not isinstance(c, list):
            continue
        for p in c:
            if isinstance(p, dict) and p.get("type") == "image_url":
                url = (p.get("image_url") or {}).get("url", "")
                if url.startswith("data:") and ";base64," in url:
                    head, b64 = url.split(";base64,", 1)
                    out.append((head[5:], base64.b64decode(b64)))
    return out


class FakeOpenAIServer:
    def __init__(self, responder: Responder | None = None, *, latency_s: float = 0.0, model: str = "fake-model",
                 record: bool = True, rate_limit: float | None = None, burst: float | None = None):
        self.responder = responder or (lambda req: Reply())
        self.latency_s = latency_s
        #: False: neither parse bodies nor keep requests (a benchmark server that costs what a fast real
        #: one would, instead of decoding every image in Python and holding gigabytes)
        self.record = record
        #: requests per second admitted (token bucket of ``burst`` tokens); others get 429 + Retry-After
        self.rate_limit = rate_limit
        self.burst = burst if burst is not None else (rate_limit or 0.0)
        self._tokens = self.burst
        self._t_last = time.monotonic()
        self.n_admitted = 0
        self.n_limited = 0
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._queue: list[Reply] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._n = 0

    # -- control ---------------------------------------------------------------------------------
    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0, "owned_by": "test"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if server.record:
                    raw = self.rfile.read(length) if length else b""
                else:
                    raw = b""
                    self._discard(length)
                if server.rate_limit and not server._admit():
                    wait = 1.0 / server.rate_limit
                    self._send(429, b'{"error": {"message": "rate limit reached", "type": "requests"}}',
                               {"Retry-After": f"{wait:.3f}", "retry-after-ms": str(int(wait * 1000))})
                    return
                if server.record:
                    try:
                        body = json.loads(raw) if raw else None
                    except json.JSONDecodeError:
                        body = None
                    images = _extract_images(body)
                else:
                    body, images = None, []
                rec = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw if server.record else b"",
                                      time.time(), images)
                with server._lock:
                    if server.record:
                        server.requests.append(rec)
                    reply = server._queue.pop(0) if server._queue else None
                if reply is None:
                    reply = server.responder(rec)
                if isinstance(reply, str):
                    reply = Reply(reply)
                delay = reply.delay_s + server.latency_s
                if delay:
                    time.sleep(delay)
                try:
                    if not self.path.rstrip("/").endswith("/chat/completions"):
                        self._send(404, b'{"error": {"message": "unknown path"}}')
                    elif reply.body is not None:
                        self._send(reply.status, reply.body, reply.headers)
                    elif reply.status != 200:
                        err = {"error": {"message": f"scripted status {reply.status}", "type": "test", "code": None}}
                        self._send(reply.status, json.dumps(err).encode(), reply.headers)
                    elif isinstance(body, dict) and body.get("stream"):
                        self._send_stream(reply, body)
                    else:
                        self._send(200, json.dumps(server.completion(reply, body)).encode(), reply.headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def _discard(self, length: int) -> None:
                # into one reused buffer per connection: a fresh 8 MB bytes per request costs page
                # faults and zeroing that a native server does not pay
                buf = getattr(self, "_sink", None)
                if buf is None:
                    buf = self._sink = memoryview(bytearray(1 << 20))
                while length > 0:
                    n = self.rfile.readinto(buf[:min(length, len(buf))])
                    if not n:
                        return
                    length -= n

            def _send(self, status: int, payload: bytes, headers: dict | None = None,
                      ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()

            def _send_stream(self, reply: Reply, body: dict):
                n = server._next_id()
                base = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0,
                        "model": body.get("model", server.model)}
                events = []
                text = reply.text or ""
                pieces = [text[i:i + 7] for i in range(0, len(text), 7)] or [""]
                events.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                    "finish_reason": None}]})
                if reply.reasoning_content:
                    events.append({**base, "choices": [{"index": 0, "delta": {"reasoning_content": reply.reasoning_content},
                                                        "finish_reason": None}]})
                for piece in pieces:
                    events.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]})
                events.append({**base, "choices": [], "usage": server._usage(reply, body)})
                payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
                self._send(200, payload, reply.headers, ctype="text/event-stream")

        class Server(ThreadingHTTPServer):
            # the listen backlog: socketserver's default of 5 makes the kernel drop the SYNs of a client
            # opening more connections at once, and each dropped one is retried after a second -- a
            # stall no real server causes (uvicorn, which vLLM and SGLang serve with, listens with 2048)
            request_queue_size = 2048

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _admit(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._t_last) * self.rate_limit)
            self._t_last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.n_admitted += 1
                return True
            self.n_limited += 1
            return False

    # -- bodies ----------------------------------------------------------------------------------
    def _next_id(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def _usage(self, reply: Reply, body: dict | None) -> dict:
        if reply.usage is not None:
            return reply.usage
        prompt = len(json.dumps((body or {}).get("messages", []))) // 100
        comp = len((reply.text or "").split())
        return {"prompt_tokens": prompt, "completion_tokens": comp, "total_tokens": prompt + comp}

    def completion(self, reply: Reply, body: dict | None) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": reply.refusal}
        if reply.reasoning_content is not None:
            message["reasoning_content"] = reply.reasoning_content
        return {
            "id": f"chatcmpl-{self._next_id()}", "object": "chat.completion", "created": int(time.time()),
            "model": (body or {}).get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
            "usage": self._usage(reply, body),
        }


if __name__ == "__main__":  # a standalone server: python tests/fake_openai_server.py [--latency S] [--text T]
    import argparse

    ap = argparse.ArgumentParser(description="loopback OpenAI-compatible server answering a fixed text")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--text", default="<answer>No.</answer>")
    ap.add_argument("--light", action="store_true", help="do not parse bodies or keep requests (benchmarks)")
    ap.add_argument("--rate-limit", type=float, default=None, help="requests/s admitted; others get 429")
    ap.add_argument("--burst", type=float, default=None, help="token-bucket size (default: one second's worth)")
    a = ap.parse_args()
    with FakeOpenAIServer(lambda req: Reply(a.text), latency_s=a.latency, record=not a.light,
                          rate_limit=a.rate_limit, burst=a.burst) as srv:
        print(srv.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
