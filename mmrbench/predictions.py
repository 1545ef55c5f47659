"""``predictions.jsonl``: one line per sample, appended as answers arrive.

The file is the durable record of a run (resume skips ids already there) and the thing a
leaderboard submission carries, so reading it treats every line as untrusted input.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError

STATUSES = ("ok", "refused", "truncated", "error")


class PredictionsError(MMRBenchError):
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
           "score", "boxes_by_threshold"}


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
    if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool)):
        raise PredictionsError(f"{where}: field 'score' must be a number")
    bbt = d.get("boxes_by_threshold")
    if bbt is not None:
        ok = isinstance(bbt, dict) and all(
            isinstance(k, str) and isinstance(v, list) and all(
                isinstance(b, list) and len(b) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
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
        score=float(score) if score is not None else None, boxes_by_threshold=bbt,
        extra={k: v for k, v in d.items() if k not in _FIELDS},
    )


def read_predictions(path: str | os.PathLike, *, allow_torn_tail: bool = True,
                     allow_duplicates: bool = False) -> list[Prediction]:
    """Read a predictions file.

    A crash can leave the last line half written; with ``allow_torn_tail`` such a final line
    (no trailing newline) is ignored, since resume will ask for that sample again. Any other bad
    line is an error naming the line. Duplicate ids are an error unless allowed (then the first wins).
    """
    p = Path(path)
    if not p.exists():
        raise PredictionsError(f"predictions file not found: {p}")
    raw = p.read_bytes()
    lines = raw.split(b"\n")
    out: list[Prediction] = []
    seen: set[str] = set()
    for i, bline in enumerate(lines, start=1):
        if not bline.strip():
            continue
        last = i == len(lines)  # no newline after it
        try:
            d = json.loads(bline.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if last and allow_torn_tail:
                break
            raise PredictionsError(f"{p}:{i}: not valid JSON ({exc})") from None
        pred = parse_prediction(d, f"{p}:{i}")
        if pred.id in seen:
            if allow_duplicates:
                continue
            raise PredictionsError(f"{p}:{i}: duplicate id '{pred.id}'")
        seen.add(pred.id)
        out.append(pred)
    return out


class PredictionWriter:
    """Append-only writer that flushes and fsyncs every line, so a crash loses at most the
    answer being written (and a torn last line is repaired on reopen)."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True, fsync_interval_s: float = 0.0):
        """``fsync_interval_s`` > 0 groups fsyncs (at most one per interval, and one on close): every
        line still reaches the OS at once (a killed process loses nothing), and only an OS crash or
        power cut can cost the last interval. On slow disks an fsync per line caps a fast API run."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        self._f = open(self.path, "a", encoding="utf-8", newline="\n")
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


def write_predictions(path: str | os.PathLike, preds: Iterable[Prediction]) -> None:
    """Write a whole predictions file at once (replacing any existing one)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8", newline="\n") as f:
        for pred in preds:
            f.write(json.dumps(pred.to_json(), ensure_ascii=False) + "\n")
