"""``result.json``: the metrics of one run plus everything needed to trust and reproduce them.

Schema (version 1; extend, never rename): ``schema_version``, ``protocol`` (``mmr-ad-v1``, prompt
variant, prompt version, IoU threshold), ``model`` (card: name, provider, model_id, sampling,
convention), ``dataset`` (name, manifest_sha256, split, subdatasets), ``metrics`` (the scorer's
JSON: per subdataset macro det/loc accuracy/recall/precision, per-category rows, counts, invalid),
``predictions_sha256``, ``harness`` (version, git commit, packages), ``date``, ``provenance``
(``run``: produced by this harness and re-scorable; ``reported``: copied from a paper table).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrbench import PROTOCOL
from mmrbench.errors import MMRBenchError

SCHEMA_VERSION = 1
PROVENANCES = ("run", "reported")


@dataclass
class Result:
    model: dict[str, Any]
    dataset: dict[str, Any]
    metrics: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=lambda: {"name": PROTOCOL, "prompt_variant": "default"})
    predictions_sha256: str | None = None
    harness: dict[str, Any] = field(default_factory=dict)
    date: str | None = None
    provenance: str = "run"
    notes: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        d = {
            "schema_version": self.schema_version, "protocol": self.protocol, "model": self.model,
            "dataset": self.dataset, "metrics": self.metrics, "predictions_sha256": self.predictions_sha256,
            "harness": self.harness, "date": self.date, "provenance": self.provenance,
        }
        if self.notes:
            d["notes"] = self.notes
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Result":
        known = {"schema_version", "protocol", "model", "dataset", "metrics", "predictions_sha256",
                 "harness", "date", "provenance", "notes"}
        if not isinstance(d, dict):
            raise MMRBenchError("result must be a JSON object")
        missing = [k for k in ("model", "dataset", "metrics") if k not in d]
        if missing:
            raise MMRBenchError(f"result is missing {', '.join(missing)}")
        return cls(
            model=d["model"], dataset=d["dataset"], metrics=d["metrics"],
            protocol=d.get("protocol", {"name": PROTOCOL}), predictions_sha256=d.get("predictions_sha256"),
            harness=d.get("harness", {}), date=d.get("date"), provenance=d.get("provenance", "run"),
            notes=d.get("notes"), extra={k: v for k, v in d.items() if k not in known},
            schema_version=d.get("schema_version", SCHEMA_VERSION),
        )


def write_result(path: str | os.PathLike, result: Result) -> None:
    from mmrbench.rundir import atomic_write_json
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, result.to_json())


def read_result(path: str | os.PathLike) -> Result:
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    from mmrbench.validation import read_json_file
    d = read_json_file(p, "result")
    try:
        return Result.from_json(d)
    except MMRBenchError as exc:
        raise MMRBenchError(f"{p}: {exc}") from None
