"""Retry policy for remote providers: exponential backoff with jitter, Retry-After honoured.

Providers never raise for a failed request: they return a :class:`~mmrbench.adapters.base.Response`
whose ``retryable`` flag says whether the failure is transient (429, 5xx, timeouts, dropped
connections) and whose ``retry_after_s`` carries the server's Retry-After. This module re-issues a
request while the answer is retryable and attempts remain, so the same policy serves every provider
(and the SDKs' own retry loops are switched off, so attempts are counted in one place).
"""
from __future__ import annotations

import contextlib
import email.utils
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mmrbench.errors import require

if TYPE_CHECKING:  # only for annotations: base imports PIL, which this module does not need
    from mmrbench.adapters.base import Response


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try. Waits grow ``initial_s * multiplier**k`` up to
    ``max_wait_s`` with full jitter; a server's Retry-After overrides the backoff when longer (but is
    capped at ``max_retry_after_s`` so a hostile header cannot stall a run for hours)."""

    max_attempts: int = 6
    initial_s: float = 1.0
    multiplier: float = 2.0
    max_wait_s: float = 60.0
    jitter: bool = True
    max_retry_after_s: float = 300.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``attempt`` (1 = first retry)."""
        base = min(self.max_wait_s, self.initial_s * self.multiplier ** (attempt - 1))
        if self.jitter:
            # "equal jitter": at least half the backoff, so retries never stampede at ~0 s
            r = (rng or random).random()
            return base / 2 + r * base / 2
        return base

    def wait_for(self, attempt: int, retry_after_s: float | None, rng: random.Random | None = None) -> float:
        wait = self.backoff(attempt, rng)
        if retry_after_s is not None and retry_after_s >= 0:
            wait = max(wait, min(retry_after_s, self.max_retry_after_s))
        return wait


#: a policy for tests: tiny waits, still bounded
FAST = RetryPolicy(max_attempts=4, initial_s=0.01, multiplier=2.0, max_wait_s=0.05, jitter=False)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI), ``retry-after`` in seconds or as an HTTP date."""
    if not headers:
        return None
    lower = {str(k).lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except (TypeError, ValueError):
            pass
    ra = lower.get("retry-after")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(ra))
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    import datetime as _dt
    now = _dt.datetime.now(when.tzinfo or _dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def retry_delay_from_body(body: Any) -> float | None:
    """Seconds from a Google error body's ``google.rpc.RetryInfo`` detail (``"retryDelay": "37s"``).

    Gemini's 429 carries its wait only there, not in a Retry-After header:
    ``{"error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
    "retryDelay": "37s"}]}}`` (a protobuf Duration in its JSON form: seconds with an ``s`` suffix,
    up to nine decimals). Accepts the whole body or its ``error`` object; None when absent.
    """
    if not isinstance(body, dict):
        return None
    err = body.get("error", body)
    details = err.get("details") if isinstance(err, dict) else None
    if not isinstance(details, list):
        return None
    for d in details:
        if not isinstance(d, dict) or not str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            continue
        delay = d.get("retryDelay")
        if isinstance(delay, dict):  # the non-JSON-mapped form {"seconds": 37, "nanos": 0}
            try:
                return max(0.0, float(delay.get("seconds", 0) or 0) + float(delay.get("nanos", 0) or 0) / 1e9)
            except (TypeError, ValueError):
                return None
        m = _DURATION.match(str(delay or ""))
        if m:
            return float(m.group(1))
    return None


def call_with_retry(fn: Callable[[], "Response"], policy: RetryPolicy, *,
                    sleep: Callable[[float], None] = time.sleep,
                    wait: Callable[[int, Any], float] | None = None, rate_limited_attempts: int | None = None):
    """Call ``fn`` until it returns a non-retryable response or attempts run out.

    Returns the last response with ``attempts`` recorded in its ``extra`` dict when present.
    Built on tenacity so the stop/wait logic is the well-tested one.
    """
    tenacity = require("tenacity", "api", "retrying API requests")

    def _wait(state) -> float:
        resp = state.outcome.result()
        if wait is not None:
            return wait(state.attempt_number, resp)
        return policy.wait_for(state.attempt_number, getattr(resp, "retry_after_s", None))

    def _stop(state) -> bool:
        n = max(1, policy.max_attempts)
        if rate_limited_attempts is not None and getattr(state.outcome.result(), "rate_limited", False):
            n = max(n, rate_limited_attempts)
        return state.attempt_number >= n

    retrying = tenacity.Retrying(
        stop=_stop,
        wait=_wait,
        retry=tenacity.retry_if_result(lambda r: bool(getattr(r, "retryable", False))),
        retry_error_callback=lambda state: state.outcome.result(),
        sleep=sleep,
        reraise=True,
    )
    attempts = 0

    def _once():
        nonlocal attempts
        attempts += 1
        return fn()

    resp = retrying(_once)
    try:
        resp.attempts = attempts
    except AttributeError:  # pragma: no cover - frozen response types
        pass
    return resp


class _StateField:
    """An attribute of :class:`AdaptiveConcurrency` kept in its state array: a list in one process,
    shared memory when the limiter spans processes. Stored as a double (None as NaN)."""

    def __init__(self, index: int, kind: type = float, optional: bool = False):
        self.index, self.kind, self.optional = index, kind, optional

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        v = obj._state[self.index]
        if self.optional and v != v:  # NaN: not set yet
            return None
        return self.kind(v)

    def __set__(self, obj: Any, value: Any) -> None:
        obj._state[self.index] = float("nan") if value is None else float(value)


class AdaptiveConcurrency:
    """How many requests may be in flight, adapted to the server's 429s (AIMD, as TCP does).

    Every attempt holds a slot while it is on the wire (not while it waits to retry). A rate-limited
    answer lowers the width to ``decrease`` (0.5, classic AIMD) times the number of requests
    still in flight -- the ones the server accepted -- never below ``minimum``: a multiplicative
    decrease of the width actually in use, which a burst of 429s (they come back at once, while
    answers take the model's latency) cannot drive below what the server takes. Every answer to a
    attempt ending while all slots are taken (or requests wait for one) adds ``1 / limit``: one slot more per round trip's worth
    of answers, up to ``maximum``. Without 429s the width stays at ``maximum`` and the limiter costs
    one lock per attempt. ``srtt`` (smoothed latency of the answers) paces rate-limited retries.

    ``shared_with`` (a multiprocessing context) keeps the state and the lock in shared memory, so
    that the sender processes of ``eval --processes`` go through one limiter, exactly as threads
    do: separate limiters would each probe the server and each react to a part of the 429s.
    """

    limit = _StateField(0)
    in_flight = _StateField(1, int)
    epoch = _StateField(2, int)
    srtt = _StateField(3, float, optional=True)
    n_rate_limited = _StateField(4, int)
    n_decreases = _StateField(5, int)
    lowest = _StateField(6)
    _last_decrease = _StateField(7)
    _waiting = _StateField(8, int)

    def __init__(self, maximum: int, minimum: int = 1, decrease: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, shared_with: Any = None):
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        self.maximum = int(maximum)
        self.minimum = int(minimum)
        self.decrease_factor = float(decrease)
        self._state: Any = shared_with.RawArray("d", 9) if shared_with is not None else [0.0] * 9
        self._cond: Any = shared_with.Condition() if shared_with is not None else threading.Condition()
        self.limit = float(maximum)
        self.in_flight = 0
        self.epoch = 0
        self.srtt = None
        self.n_rate_limited = 0
        self.n_decreases = 0
        self.lowest = float(maximum)
        self._last_decrease = float("-inf")
        self._waiting = 0
        self._clock = clock

    @property
    def width(self) -> int:
        return max(self.minimum, int(self.limit))

    @contextlib.contextmanager
    def slot(self):
        """Hold one of the ``width`` slots for one attempt; yields a callable taking its response."""
        with self._cond:
            self._waiting += 1
            while self.in_flight >= self.width:
                self._cond.wait()
            self._waiting -= 1
            self.in_flight += 1
            epoch = self.epoch
            t0 = self._clock()
        try:
            yield lambda resp: self.record(resp, epoch, t0)
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def record(self, resp: Any, epoch: int, t0: float | None = None) -> None:
        now = self._clock()
        with self._cond:
            if getattr(resp, "rate_limited", False):
                self.n_rate_limited += 1
                # the requests still in flight (this one excluded) are the ones the server took:
                # the new width is a fraction of that, however many 429s this burst brings back
                target = max(float(self.minimum), self.decrease_factor * (self.in_flight - 1))
                if target < self.limit:
                    self.limit = target
                    self.lowest = min(self.lowest, self.limit)
                    if epoch == self.epoch:  # counted once per round of refusals
                        self.epoch += 1
                        self.n_decreases += 1
                    self._last_decrease = now
                return
            if t0 is not None:
                rtt = now - t0
                self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
            # grow only while the width is what holds requests back (all slots taken, or some waiting)
            saturated = self._waiting > 0 or self.in_flight >= self.width
            if saturated and self.limit < self.maximum:
                self.limit = min(float(self.maximum), self.limit + 1.0 / max(1.0, self.limit))
                self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        return {"max": self.maximum, "min": self.minimum, "final": self.width, "lowest": max(self.minimum, int(self.lowest)),
                "rate_limited": self.n_rate_limited, "decreases": self.n_decreases}


class RetryingAPIModel:
    """Mixin giving API providers their ``generate``: each request is one ``_call`` attempt wrapped in
    the retry policy (``self.retry``), up to ``self.max_concurrency`` requests in flight at once.

    Providers only write ``_call(request) -> Response`` (one attempt, never raising), so retrying and
    concurrency behave identically for every API."""

    retry: RetryPolicy
    max_concurrency: int
    convention: str
    #: requests may carry undecoded files (sent as their own bytes): see requests_build
    accepts_file_bytes = True
    #: encoded shared images (references) kept per model, bounded in bytes
    image_cache_bytes = 64 << 20

    #: a warning about the card, said once with the first request (not at construction: a command that
    #: fails on its own input afterwards prints only its one error line); None when there is nothing to say.
    #: The sender processes of ``eval --processes`` clear it in all but one, so a run says it once.
    start_warning: str | None = None

    def warn_once(self) -> None:
        """Print :attr:`start_warning` the first time it is called with one set (thread-safe)."""
        if self.start_warning:
            with self._warn_lock:
                warning, self.start_warning = self.start_warning, None
            if warning:
                import sys
                print(f"warning: {warning}", file=sys.stderr)

    def _init_api_settings(self, *, convention, concurrency, timeout_s, retry, image_prep) -> None:
        """Settings every API provider takes the same way (declared box convention, bounded
        concurrency, per-request timeout, retry policy, image preparation)."""
        from mmrbench.adapters.image_encoding import ImagePrep

        if convention:
            self.set_convention(convention)  # type: ignore[attr-defined]  # the ModelAPI this mixin joins
        if concurrency:
            self.max_concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.retry = retry or RetryPolicy()
        self.image_prep = image_prep or ImagePrep()
        from mmrbench.adapters.image_encoding import EncodedCache
        self.image_cache = EncodedCache(self.image_cache_bytes)
        self._warn_lock = threading.Lock()

    def _call(self, request):  # pragma: no cover - provided by the provider
        raise NotImplementedError

    #: set by the runner: the shared :class:`AdaptiveConcurrency` every attempt goes through
    concurrency_limiter: "AdaptiveConcurrency | None" = None

    def generate_one(self, request):
        limiter = self.concurrency_limiter
        if limiter is None:
            return call_with_retry(lambda: self._call(request), self.retry)

        def attempt():
            with limiter.slot() as done:
                resp = self._call(request)
                done(resp)
            return resp

        policy = self.retry

        def wait(n: int, resp: Any) -> float:
            # a 429 under adaptive concurrency: the narrower width paces the retry, so it waits only
            # what the server asked (Retry-After), not a growing backoff that idles a worker
            ra = getattr(resp, "retry_after_s", None)
            if getattr(resp, "rate_limited", False):
                # at least one round trip (the width has adapted by then), jittered so the requests
                # refused together do not come back together
                rtt = limiter.srtt if limiter.srtt is not None else policy.initial_s
                return min(max(ra or 0.0, rtt * (0.5 + random.random())), policy.max_retry_after_s)
            return policy.wait_for(n, ra)

        # rate-limited attempts are paced by the width, so more of them are allowed before giving up
        return call_with_retry(attempt, policy, wait=wait, rate_limited_attempts=4 * policy.max_attempts)

    def generate(self, requests):
        from concurrent.futures import ThreadPoolExecutor

        if len(requests) <= 1 or self.max_concurrency <= 1:
            return [self.generate_one(r) for r in requests]
        with ThreadPoolExecutor(min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self.generate_one, requests))
