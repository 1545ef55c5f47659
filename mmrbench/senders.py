"""Sending API requests from several processes (``mmrbench eval --processes N``).

One Python process sends requests with one interpreter lock: building a request, the HTTP client's
work and parsing the answer all take turns on it, so against a server that answers hundreds of
requests a second (a local vLLM or LMDeploy), the client process, not the server, sets the pace
(``benchmarks/runner_throughput.py``). Here N child processes (:class:`SenderPool`) each run their share of the K
threads, each with its own model client and retry policy; when adaptive, every attempt of every sender
goes through one AIMD limiter in shared memory, as threads do. The parent keeps everything that
must be single: which samples are asked, the in-flight bound, the cost guard, and the one writer of
``predictions.jsonl``, which receives each answer as the JSON line a thread-mode run would write.

Children are started with ``spawn`` (never ``fork``: the parent has threads), ignore Ctrl-C (the
parent handles it and stops them), and exit on their own if the parent dies, even by SIGKILL, so no
orphan goes on spending. A child that dies is an error of the run; its answers in flight are not
written and the next run asks for them again, as after any crash.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mmrbench.data.schema import Sample
from mmrbench.errors import MMRBenchError
from mmrbench.predictions import Prediction, parse_prediction

#: what the parent puts on the shared queue to stop the children's threads (each thread puts it back)
_STOP = None


class SenderError(MMRBenchError):
    """A sender process failed to start or died during the run."""


@dataclass
class Answerer:
    """A sample -> its predictions line, through one model: the runner's per-sample work, the same in
    a thread of the runner and in a sender process."""

    model: Any
    root: Path
    variant: str
    domain: dict | None
    config: Any  # GenerationConfig
    decode: bool
    convention: str
    tag: str

    def __call__(self, sample: Sample) -> Prediction:
        from mmrbench.dispatch import prediction_from_response
        from mmrbench.requests_build import build_request
        try:
            req = build_request(sample, self.root, variant=self.variant, domain_labels=self.domain,
                                config=self.config, decode=self.decode)
        except MMRBenchError as exc:
            return Prediction(sample.id, None, "error", str(exc), convention=self.convention, run=self.tag)
        resps = self.model.generate([req])
        if not resps:
            return Prediction(sample.id, None, "error", "provider returned no response", convention=self.convention,
                              run=self.tag)
        return prediction_from_response(sample.id, resps[0], self.convention, run=self.tag)


@dataclass(frozen=True)
class SenderSpec:
    """Everything a sender process needs to build its own model and answer samples (picklable)."""

    card: Any  # ModelCard
    retry: Any  # RetryPolicy | None
    root: Path
    variant: str
    domain: dict | None
    config: Any
    decode: bool
    convention: str
    tag: str


def split_threads(k: int, n: int) -> list[int]:
    """K threads over N processes as evenly as possible (no process gets none)."""
    n = max(1, min(n, k))
    return [k // n + (1 if i < k % n else 0) for i in range(n)]


def _watch_parent() -> None:
    """Exit this process as soon as its parent is gone (a SIGKILL'd parent cannot stop its children)."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - only ever started as a child
        return
    from multiprocessing.connection import wait
    wait([parent.sentinel])
    os._exit(3)


def sender_main(spec: SenderSpec, index: int, threads: int, limiter: Any, inq, outq) -> None:
    """A sender process: builds its model and says ``("ready", index, None)`` (or ``("failed", index,
    text)``); then ``threads`` threads take samples from ``inq`` and put ``("answer", id, line)`` on
    ``outq``; at the stop, ``("done", index, None)``. ``limiter``: the run's shared AIMD limiter, or None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, daemon=True, name="mmrbench-parent-watch").start()
    try:
        from mmrbench.cards import create_model
        model = create_model(spec.card, retry=spec.retry)
        if index:
            model.start_warning = None  # the first sender says the card's warning: once per run
        if limiter is not None:
            model.concurrency_limiter = limiter
        answer = Answerer(model, spec.root, spec.variant, spec.domain, spec.config, spec.decode, spec.convention,
                          spec.tag)
    except BaseException as exc:
        outq.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        return
    outq.put(("ready", index, None))

    def loop() -> None:
        while True:
            sample = inq.get()
            if sample is _STOP:
                inq.put(_STOP)  # for the next thread, here or in another sender
                return
            try:
                pred = answer(sample)
            except BaseException as exc:  # a provider bug is this sample's error line, never a lost sample
                pred = Prediction(sample.id, None, "error", f"{type(exc).__name__}: {exc}",
                                  convention=spec.convention, run=spec.tag)
            outq.put(("answer", sample.id, pred.to_json()))

    workers = [threading.Thread(target=loop, name=f"mmrbench-sender-{index}-{i}") for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    try:
        model.close()
    except Exception:  # pragma: no cover
        pass
    outq.put(("done", index, None))


class SenderPool:
    """N sender processes holding K threads between them, started and ready (each has built its model)
    before the first sample is handed out, so a run's throughput is measured from its first request,
    as a local engine's is measured after its model has loaded. Close it (``with``) in every case."""

    def __init__(self, spec: SenderSpec, k: int, n_processes: int, adaptive_floor: int | None = None,
                 ready_timeout_s: float = 300.0):
        """``adaptive_floor``: the AIMD floor when the run adapts its width to 429s, None when it does not."""
        self.spec = spec
        self.k = k
        self.threads = split_threads(k, n_processes)
        self.stats: dict[str, Any] = {"processes": len(self.threads), "threads": self.threads}
        ctx = multiprocessing.get_context("spawn")
        self.limiter = None
        if adaptive_floor is not None:
            from mmrbench.adapters.retry import AdaptiveConcurrency
            self.limiter = AdaptiveConcurrency(k, min(k, max(1, adaptive_floor)), shared_with=ctx)
        self.inq, self.outq = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=sender_main, args=(spec, i, t, self.limiter, self.inq, self.outq),
                                  daemon=True, name=f"mmrbench-sender-{i}") for i, t in enumerate(self.threads)]
        self.done: set[int] = set()
        t0 = time.perf_counter()
        try:
            for p in self.procs:
                p.start()
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.close()
            raise
        self.stats["start_s"] = round(time.perf_counter() - t0, 3)

    def __enter__(self) -> "SenderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait_ready(self, timeout_s: float) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(ready) < len(self.procs):
            if time.monotonic() > deadline:
                raise SenderError(f"sender processes not ready after {timeout_s:g} s")
            try:
                kind, key, payload = self.outq.get(timeout=0.5)
            except queue.Empty:
                self._check_alive()
                continue
            if kind == "failed":
                raise SenderError(f"sender process {key} could not start its model: {payload}")
            if kind == "ready":
                ready.add(key)

    def dispatch(self, todo: Sequence[Sample], record: Callable[[Prediction], None],
                 stop: Callable[[int], bool] = lambda in_flight: False) -> None:
        """Ask ``todo``; each answer goes to ``record`` (in this process) as it arrives. At most 2K
        samples are handed out at once, so a cost stop leaves little queued (and drops that)."""
        from mmrbench.dispatch import Feeder, drain_queue
        feed = Feeder(todo, 2 * self.k, self.inq.put, lambda: drain_queue(self.inq), stop)
        for kind, key, payload in feed.results(self.outq.get, self._check_alive):
            if kind != "answer":  # "ready" came before the first sample, "done" only follows the stop
                raise SenderError(f"sender process {key} sent '{kind}' while answering")
            record(parse_prediction(payload, f"sender answer for {key}"))

    def finish(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop the senders' threads and wait for them; returns :attr:`stats`."""
        self.inq.put(_STOP)
        deadline = time.monotonic() + timeout_s
        while len(self.done) < len(self.procs) and time.monotonic() < deadline:
            try:
                kind, key, payload = self.outq.get(timeout=0.5)
            except queue.Empty:
                if all(not p.is_alive() for i, p in enumerate(self.procs) if i not in self.done):
                    break
                continue
            if kind == "done":
                self.done.add(key)
        return self.stats

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            if p.pid is not None:
                p.join(timeout=5)
        for q in (self.inq, self.outq):
            q.cancel_join_thread()  # items left unread must not hold this process at exit
            q.close()

    def _check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if i not in self.done and p.pid is not None and not p.is_alive():
                raise SenderError(f"sender process {i} died (exit code {p.exitcode}); the answers it had in flight "
                                  f"were not written, re-run the same command to ask for them")
