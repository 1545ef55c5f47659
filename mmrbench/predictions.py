"""``predictions.jsonl``: one line per sample, appended as answers arrive.

The file is the durable record of a run (resume skips ids already there) and the thing a
leaderboard submission carries, so reading it treats every line as untrusted input.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import InputError
from mmrbench.validation import loads_json

STATUSES = ("ok", "refused", "truncated", "error")


class PredictionsError(InputError):
    pass


@dataclass
class Prediction:
    """One answered sample.

    MLLMs fill ``response``; classical detectors fill ``score`` (image anomaly score, normalised per
    category) and ``boxes_by_threshold`` (threshold string like "0.5" -> boxes in original pixels).
    ``image_sizes`` lists the (width, height) of every image sent, the query last.
    """

    id: str
    response: str | None = None
    status: str = "ok"
    error: str | None = None
    image_sizes: list[list[int]] | None = None
    convention: str | None = None
    latency_s: float | None = None
    usage: dict[str, int] | None = None
    score: float | None = None
    boxes_by_threshold: dict[str, list[list[float]]] | None = None
    #: the run this answer belongs to (a hash of the run's fingerprint): resume refuses lines of
    #: another run or of no known run, so one model's answers are never credited to another
    run: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def query_size(self) -> tuple[int, int] | None:
        if self.image_sizes:
            w, h = self.image_sizes[-1]
            return int(w), int(h)
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d = {k: v for k, v in d.items() if v is not None or k in ("response",)}
        d.update(extra)
        return d


_FIELDS = {"id", "response", "status", "error", "image_sizes", "convention", "latency_s", "usage",
           "score", "boxes_by_threshold", "run"}


def _valid_sizes(sizes: Any) -> bool:
    if type(sizes) is not list:
        return False
    for wh in sizes:
        # type() is not int also rejects bools; this check runs once per line of large files
        if type(wh) is not list or len(wh) != 2 or type(wh[0]) is not int or type(wh[1]) is not int \
                or wh[0] <= 0 or wh[1] <= 0:
            return False
    return True


def parse_prediction(d: Any, where: str) -> Prediction:
    if not isinstance(d, dict):
        raise PredictionsError(f"{where}: expected a JSON object")
    sid = d.get("id")
    if not isinstance(sid, str) or not sid:
        raise PredictionsError(f"{where}: field 'id' must be a non-empty string")
    resp = d.get("response")
    if resp is not None and not isinstance(resp, str):
        raise PredictionsError(f"{where}: field 'response' must be a string or null")
    status = d.get("status", "ok")
    if status not in STATUSES:
        raise PredictionsError(f"{where}: field 'status' must be one of {', '.join(STATUSES)}")
    sizes = d.get("image_sizes")
    if sizes is not None and not _valid_sizes(sizes):
        raise PredictionsError(f"{where}: field 'image_sizes' must be a list of [width, height]")
    score = d.get("score")
    if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool)
                              or not math.isfinite(score)):
        raise PredictionsError(f"{where}: field 'score' must be a finite number")
    run = d.get("run")
    if run is not None and not isinstance(run, str):
        raise PredictionsError(f"{where}: field 'run' must be a string")
    bbt = d.get("boxes_by_threshold")
    if bbt is not None:
        ok = isinstance(bbt, dict) and all(
            isinstance(k, str) and isinstance(v, list) and all(
                isinstance(b, list) and len(b) == 4 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in b)
                for b in v) for k, v in bbt.items())
        if not ok:
            raise PredictionsError(f"{where}: field 'boxes_by_threshold' must map thresholds to lists of boxes")
    conv = d.get("convention")
    if conv is not None and not isinstance(conv, str):
        raise PredictionsError(f"{where}: field 'convention' must be a string")
    err = d.get("error")
    return Prediction(
        id=sid, response=resp, status=status, error=str(err) if err is not None else None,
        image_sizes=sizes, convention=conv,
        latency_s=d.get("latency_s") if isinstance(d.get("latency_s"), (int, float)) else None,
        usage=d.get("usage") if isinstance(d.get("usage"), dict) else None,
        score=float(score) if score is not None else None, boxes_by_threshold=bbt, run=run,
        extra={k: v for k, v in d.items() if k not in _FIELDS},
    )


def parse_predictions_bytes(raw: bytes, where: str, *, allow_torn_tail: bool = True) -> dict[str, Prediction]:
    """Every id's *latest* line, in the order of those lines: the one rule for reading predictions.

    A retried id (an ``error`` line, then an ``ok`` line) appends a new line that replaces the
    earlier one; the runner, ``score``, ``merge`` and the leaderboard all read files through here, so
    they agree on which answer counts. A torn final line (no newline after it: a crash mid-write) is
    ignored when ``allow_torn_tail``; any other bad line is an error naming the line.
    """
    lines = raw.split(b"\n")
    out: dict[str, Prediction] = {}
    for i, bline in enumerate(lines, start=1):
        if not bline.strip():
            continue
        try:
            d = loads_json(bline, f"{where}:{i}")
        except InputError as exc:
            if i == len(lines) and allow_torn_tail:
                break
            raise PredictionsError(str(exc)) from None
        pred = parse_prediction(d, f"{where}:{i}")
        out.pop(pred.id, None)  # re-insert so the order follows the latest line
        out[pred.id] = pred
    return out


def load_latest(path: str | os.PathLike, *, allow_torn_tail: bool = True) -> dict[str, Prediction]:
    """:func:`parse_predictions_bytes` of a file; a missing file has no predictions."""
    p = Path(path)
    if not p.exists():
        return {}
    return parse_predictions_bytes(p.read_bytes(), str(p), allow_torn_tail=allow_torn_tail)


def read_predictions(path: str | os.PathLike, *, allow_torn_tail: bool = True) -> list[Prediction]:
    """The predictions of a file, one per id, the latest line winning (see :func:`parse_predictions_bytes`)."""
    p = Path(path)
    if not p.is_file():
        raise PredictionsError(f"predictions file not found: {p}")
    return list(load_latest(p, allow_torn_tail=allow_torn_tail).values())


class PredictionWriter:
    """Append-only writer that flushes and fsyncs every line, so a crash loses at most the
    answer being written (and a torn last line is repaired on reopen)."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True, fsync_interval_s: float = 0.0):
        """``fsync_interval_s`` > 0 groups fsyncs (at most one per interval, and one on close): every
        line still reaches the OS at once (a killed process loses nothing), and only an OS crash or
        power cut can cost the last interval. On slow disks an fsync per line caps a fast API run."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            raise PredictionsError(f"{self.path} is a symbolic link: predictions are never written through links")
        self._repair_torn_tail()
        # O_NOFOLLOW: a link planted after the check above still fails instead of being written through
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        self._f = os.fdopen(fd, "a", encoding="utf-8", newline="\n")
        self._fsync = fsync
        self._interval = max(0.0, float(fsync_interval_s))
        self._last_sync = 0.0
        self._dirty = False

    def _repair_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def write(self, pred: Prediction) -> None:
        self._f.write(json.dumps(pred.to_json(), ensure_ascii=False) + "\n")
        self._f.flush()
        if self._fsync:
            if self._interval <= 0:
                os.fsync(self._f.fileno())
                return
            import time as _time
            now = _time.monotonic()
            if now - self._last_sync >= self._interval:
                os.fsync(self._f.fileno())
                self._last_sync = now
                self._dirty = False
            else:
                self._dirty = True

    def close(self) -> None:
        if self._fsync and self._dirty and not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
        self._f.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def predictions_bytes(preds: Iterable[Prediction]) -> bytes:
    return "".join(json.dumps(pr.to_json(), ensure_ascii=False) + "\n" for pr in preds).encode("utf-8")


def write_predictions(path: str | os.PathLike, preds: Iterable[Prediction]) -> None:
    """Write a whole predictions file at once, atomically (replacing any existing one, never
    writing through a link)."""
    from mmrbench.rundir import atomic_write_bytes
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, predictions_bytes(preds))
