"""What every leaderboard check shares, whatever the protocol: the result-schema checker and its issues,
the verification outcome and its statuses, reading submitted predictions within their limits, and file
hashes. ``schema``/``verify`` (MMR-AD) and ``mmad`` (MMAD) build on it; it imports none of them, so the
protocols can dispatch to each other's checks without an import cycle."""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrbench.errors import MMRBenchError
from mmrbench.predictions import Prediction, PredictionsError

MAX_NAME_CHARS = 200
VERIFIED, UNVERIFIED, REPORTED = "verified", "unverified", "reported"


SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ResultValidationError(MMRBenchError):
    """A result file breaks the schema; ``issues`` holds every problem found."""

    def __init__(self, where: str, issues: list["Issue"]):
        self.issues = issues
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{where}: {first.path}: {first.message}{more}")


@dataclass(frozen=True)
class Issue:
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning" if self.warning else "error"
        return f"{kind}: {self.path}: {self.message}"


def table_of(d: dict[str, Any], key: str) -> dict[str, Any]:
    """``d[key]`` when it is a JSON object, else an empty one (untrusted results may hold anything)."""
    v = d.get(key)
    return v if isinstance(v, dict) else {}


class Checker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def err(self, path: str, msg: str) -> None:
        self.issues.append(Issue(path, msg))

    def warn(self, path: str, msg: str) -> None:
        self.issues.append(Issue(path, msg, warning=True))

    def obj(self, d: Any, path: str) -> bool:
        if not isinstance(d, dict):
            self.err(path, f"must be an object (got {type_name(d)})")
            return False
        return True

    def string(self, d: dict, key: str, path: str, *, required: bool = True, nullable: bool = False,
               max_len: int = MAX_NAME_CHARS, nonempty: bool = True) -> None:
        p = f"{path}.{key}"
        if key not in d:
            if required:
                self.err(p, "is required")
            return
        v = d[key]
        if v is None:
            if not nullable:
                self.err(p, "must be a string (got null)")
            return
        if not isinstance(v, str):
            self.err(p, f"must be a string (got {type_name(v)})")
        elif nonempty and not v.strip():
            self.err(p, "must not be empty")
        elif len(v) > max_len:
            self.err(p, f"is longer than {max_len} characters")

    def sha(self, d: dict, key: str, path: str, *, required: bool) -> None:
        p = f"{path}.{key}"
        v = d.get(key)
        if v is None:
            if required:
                self.err(p, "is required (64 lowercase hex digits)" if key not in d else
                         "must be a sha256 (64 lowercase hex digits), not null")
            return
        if not isinstance(v, str) or not SHA256_RE.match(v):
            self.err(p, f"must be a sha256: 64 lowercase hex digits (got {short_text(v)})")

    def fraction(self, v: Any, path: str, *, nullable: bool) -> None:
        if v is None:
            if not nullable:
                self.err(path, "must be a number in [0, 1] (got null)")
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.err(path, f"must be a number in [0, 1] (got {type_name(v)})")
        elif not 0.0 <= float(v) <= 1.0:
            self.err(path, f"must be a number in [0, 1] (metrics are fractions, got {v!r})")

    def count(self, d: dict, key: str, path: str) -> None:
        if key not in d:
            return
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            self.err(f"{path}.{key}", f"must be a non-negative integer (got {short_text(v)})")


def type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(v), type(v).__name__)


def short_text(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


TOLERANCE = 1e-9


#: largest predictions file (decompressed) the leaderboard reads
MAX_PREDICTIONS_BYTES = 512 * 1024 * 1024


#: longest single line of a predictions file
MAX_LINE_BYTES = 4 * 1024 * 1024


PREDICTION_NAMES = ("predictions.jsonl", "predictions.jsonl.gz")


@dataclass
class Verification:
    """Outcome of checking one entry. ``reasons`` is empty exactly when ``status`` is verified."""

    status: str
    reasons: list[str] = field(default_factory=list)
    predictions_sha256: str | None = None
    manifest_sha256: str | None = None
    recomputed: dict[str, Any] | None = None  # ScoreReport.to_json() of the re-scoring

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons),
                "predictions_sha256": self.predictions_sha256, "manifest_sha256": self.manifest_sha256}


def find_predictions(run_dir: str | os.PathLike) -> Path | None:
    d = Path(run_dir)
    for name in PREDICTION_NAMES:
        if (d / name).is_file():
            return d / name
    return None


def read_predictions_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of ``predictions.jsonl`` (decompressed when gzipped), refusing oversized files."""
    p = Path(path)
    if p.suffix == ".gz":
        with gzip.open(p, "rb") as f:
            raw = f.read(MAX_PREDICTIONS_BYTES + 1)
    else:
        if p.stat().st_size > MAX_PREDICTIONS_BYTES:
            raise PredictionsError(f"{p}: larger than the {MAX_PREDICTIONS_BYTES}-byte limit for predictions")
        raw = p.read_bytes()
    if len(raw) > MAX_PREDICTIONS_BYTES:
        raise PredictionsError(f"{p}: larger than the {MAX_PREDICTIONS_BYTES}-byte limit for predictions")
    return raw


def parse_predictions_bytes(raw: bytes, where: str) -> list[Prediction]:
    """Submitted predictions: every line must parse (no torn tail: a submission is a finished file)
    and fit the line limit; a repeated id follows the one rule of every reader here, the latest line
    wins (:func:`mmrbench.predictions.parse_predictions_bytes`)."""
    from mmrbench.predictions import parse_predictions_bytes as parse_latest
    for i, bline in enumerate(raw.split(b"\n"), start=1):
        if len(bline) > MAX_LINE_BYTES:
            raise PredictionsError(f"{where}:{i}: line longer than {MAX_LINE_BYTES} bytes")
    return list(parse_latest(raw, where, allow_torn_tail=False).values())


def load_predictions(path: str | os.PathLike) -> tuple[list[Prediction], str]:
    """Predictions and the sha256 of the (decompressed) ``predictions.jsonl`` bytes."""
    raw = read_predictions_bytes(path)
    return parse_predictions_bytes(raw, str(path)), hashlib.sha256(raw).hexdigest()


def sha256_file(p: Path) -> str:
    st = p.stat()
    return _sha256_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    """Hash of a file, cached by (path, mtime, size): a board build looks every entry's manifest up
    in the same stores, which would otherwise hash the same files once per entry."""
    from mmrbench.hashing import file_sha256
    return file_sha256(path)


def edited_reason(diffs: list[str]) -> str:
    """The reason shown for a run whose claimed metrics do not re-score: the first three differences."""
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return "metrics edited: " + "; ".join(diffs[:3]) + more
