"""Sending requests and turning answers into predictions lines.

API providers run in a pool of daemon threads (bounded, optionally adaptive concurrency; requests are
built inside the workers so file reads overlap network waits), local engines get batches of
``batch_size``. A provider bug or a failed batch becomes ``error`` lines, never a lost sample; the
caller's ``record`` writes each line as it arrives. Used by the MMR-AD runner and by textgen.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from mmrbench.errors import MMRBenchError
from mmrbench.predictions import Prediction


class HasId(Protocol):
    """What dispatch needs of an item: the id its prediction is recorded under (a Sample, a textgen Job...)."""

    @property
    def id(self) -> str: ...


ItemT = TypeVar("ItemT", bound=HasId)


class DaemonPool:
    """K daemon worker threads: unlike ThreadPoolExecutor, Ctrl-C never waits for requests in flight
    (their answers are simply not written, and the next run asks again)."""

    _STOP = object()

    def __init__(self, fn: Callable[[Any], Any], k: int):
        self.fn = fn
        self.inq: queue.Queue = queue.Queue()
        self.outq: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._loop, daemon=True, name=f"mmrbench-worker-{i}") for i in range(k)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while True:
            item = self.inq.get()
            if item is self._STOP:
                return
            try:
                self.outq.put((item, self.fn(item), None))
            except BaseException as exc:  # a provider bug must not kill the worker
                self.outq.put((item, None, exc))

    def drain(self) -> int:
        """Drop work not yet started; returns how many items were dropped."""
        return drain_queue(self.inq)

    def close(self) -> None:
        """Drop work not yet started (after Ctrl-C nothing new is sent), then stop the workers."""
        self.drain()
        for _ in self.threads:
            self.inq.put(self._STOP)


def drain_queue(q: Any) -> int:
    """Take every item still waiting in ``q`` (a ``queue.Queue`` or a ``multiprocessing.Queue``);
    returns how many there were."""
    n = 0
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return n
        n += 1


class Feeder:
    """Hands items out while fewer than ``bound`` are in flight (queued or being asked). When ``stop``
    says so (a cost budget), nothing more is handed out and what is queued but not started is taken
    back with ``drain``: not spent, asked by the next run. Shared by the thread pool and the sender
    processes, so both stop the same way."""

    def __init__(self, todo: Sequence[Any], bound: int, put: Callable[[Any], None], drain: Callable[[], int],
                 stop: Callable[[int], bool]):
        self._it = iter(todo)
        self.bound, self._put, self._drain, self._stop = bound, put, drain, stop
        self.in_flight = 0
        self.exhausted = False

    def fill(self) -> None:
        while not self.exhausted and self.in_flight < self.bound:
            if self._stop(self.in_flight):
                self.exhausted = True
                self.in_flight -= self._drain()
                return
            item = next(self._it, None)
            if item is None:
                self.exhausted = True
                return
            self._put(item)
            self.in_flight += 1

    def results(self, get: Callable[..., Any], idle: Callable[[], None] = lambda: None) -> Iterator[Any]:
        """Keeps items handed out and yields what comes back (``get(timeout=...)``, which raises
        ``queue.Empty`` when nothing did; ``idle`` is called then), one per item, until none is in flight."""
        while True:
            self.fill()
            if self.in_flight <= 0:
                return
            try:
                result = get(timeout=0.5)
            except queue.Empty:
                idle()
                continue
            self.in_flight -= 1
            yield result


def dispatch_threads(todo: Sequence[ItemT], answer: Callable[[ItemT], Prediction],
                      record: Callable[[Prediction], None], k: int, convention: str, tag: str | None = None,
                      stop: Callable[[int], bool] = lambda in_flight: False) -> None:
    if not todo:
        return
    pool = DaemonPool(answer, k)
    try:
        for sample, pred, exc in Feeder(todo, 2 * k, pool.inq.put, pool.drain, stop).results(pool.outq.get):
            if exc is not None:
                if isinstance(exc, KeyboardInterrupt):
                    raise exc
                pred = Prediction(sample.id, None, "error", f"{type(exc).__name__}: {exc}", convention=convention,
                                  run=tag)
            record(pred)
    finally:
        pool.close()


def dispatch_batches(todo: Sequence[ItemT], model: Any, record: Callable[[Prediction], None], batch: int,
                      convention: str, build: Callable[[ItemT], Any], tag: str | None = None,
                      stop: Callable[[int], bool] = lambda in_flight: False) -> None:
    for i in range(0, len(todo), batch):
        if stop(batch):
            return
        chunk = todo[i:i + batch]
        reqs, ids = [], []
        for s in chunk:
            try:
                reqs.append(build(s))
                ids.append(s.id)
            except MMRBenchError as exc:
                record(Prediction(s.id, None, "error", str(exc), convention=convention, run=tag))
        if not reqs:
            continue
        try:
            resps = model.generate(reqs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the whole batch failed: record each, the next run retries them
            for sid in ids:
                record(Prediction(sid, None, "error", f"{type(exc).__name__}: {exc}", convention=convention, run=tag))
            continue
        if len(resps) != len(reqs):
            for sid in ids:
                record(Prediction(sid, None, "error", f"provider returned {len(resps)} answers for {len(reqs)} requests",
                                  convention=convention, run=tag))
            continue
        for sid, r in zip(ids, resps):
            record(prediction_from_response(sid, r, getattr(model, "convention", convention) or convention, run=tag))


def prediction_from_response(sample_id: str, resp: Any, convention: str, attempts: int | None = None,
                             run: str | None = None) -> Prediction:
    usage = resp.usage.to_json() if resp.usage is not None else None
    extra: dict[str, Any] = {}
    attempts = attempts or resp.attempts
    if attempts and attempts > 1:
        extra["attempts"] = attempts
    if resp.reasoning:
        extra["reasoning_content"] = resp.reasoning
    if resp.box_key:
        extra["box_key"] = resp.box_key
    status = resp.status if resp.status in ("ok", "refused", "truncated", "error") else "error"
    return Prediction(id=sample_id, response=resp.text, status=status, error=resp.error,
                      image_sizes=resp.image_sizes or None, convention=resp.convention or convention,
                      latency_s=round(resp.latency_s, 4) if resp.latency_s is not None else None,
                      usage=usage, run=run, extra=extra)
