"""Strict validation of ``result.json`` files (schema version 1).

A leaderboard takes result files from strangers, so the checks are stricter than what
:func:`mmrbench.results.Result.from_json` needs to load a file: types, required keys, the schema
version, provenance, metric ranges, sha256 formats and size limits. Every problem names the JSON
path of the bad field (``$.metrics.subdatasets.VisA.det.recall``) so a submitter can fix it from one
line. JSON is parsed without NaN/Infinity (``json`` accepts them by default) and never evaluated.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.checks import (  # noqa: F401 (re-exported: the names callers use from here)
    Checker, Issue, ResultValidationError, SHA256_RE, type_name, short_text, table_of)
from mmrbench.results import PROVENANCES, SCHEMA_VERSION
from mmrbench.scoring import METRICS as METRIC_NAMES  # one definition of the metric names: the scorer's

#: largest result.json a leaderboard reads (a full per-category report is a few hundred KB)
MAX_RESULT_BYTES = 8 * 1024 * 1024
#: longest free-text field (model name, notes) kept in a result
MAX_NOTES_CHARS = 20_000
#: subdataset names become table columns: plain words only
SUBDATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")
KNOWN_KEYS = {"schema_version", "protocol", "model", "dataset", "metrics", "predictions_sha256", "harness",
              "date", "provenance", "notes"}
#: top-level extension keys this module knows and checks; others are allowed (Result keeps them) but warned
KNOWN_EXTRA = {"detector", "reference", "variant", "statistics"}


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses NaN/Infinity (which would slip past range checks) and nesting
    deeper than the validation layer allows (a RecursionError would abort a board build)."""
    from mmrbench.errors import InputError
    from mmrbench.validation import loads_json
    try:
        return loads_json(text)
    except InputError as exc:  # callers here turn a ValueError into their own reason
        reason = str(exc).split(": ", 1)[-1]
        if reason.startswith("not valid JSON (") and reason.endswith(")"):
            reason = reason[len("not valid JSON ("):-1]  # the caller says "not valid JSON" itself
        raise ValueError(reason) from None


def load_result_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a result file with a size limit; a folder means its ``result.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    if not p.is_file():
        raise MMRBenchError(f"result not found: {p}")
    size = p.stat().st_size
    if size > MAX_RESULT_BYTES:
        raise MMRBenchError(f"{p}: {size} bytes is over the {MAX_RESULT_BYTES}-byte limit for a result file")
    try:
        d = loads_strict(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MMRBenchError(f"{p}: not valid JSON ({exc})") from None
    return d


def _check_metric_block(c: Checker, block: Any, path: str, *, nullable: bool) -> None:
    if not c.obj(block, path):
        return
    for part in ("det", "loc"):
        pp = f"{path}.{part}"
        if part not in block:
            c.err(pp, "is required")
            continue
        m = block[part]
        if m is None and nullable:
            continue
        if not c.obj(m, pp):
            continue
        for name in METRIC_NAMES:
            if name not in m:
                c.err(f"{pp}.{name}", "is required")
            else:
                c.fraction(m[name], f"{pp}.{name}", nullable=nullable)
    for key in ("n", "invalid", "missing"):
        c.count(block, key, path)
    if "invalid_rate" in block:
        c.fraction(block["invalid_rate"], f"{path}.invalid_rate", nullable=False)


def validate_result(d: Any) -> list[Issue]:
    """Every schema problem of a parsed result (errors and warnings); empty when the file is clean.
    An ``mmad-v1`` result (MMAD's multiple-choice protocol) is checked by its own schema."""
    from mmrbench.leaderboard.mmad import is_mmad_result, validate_mmad_result
    if is_mmad_result(d):
        return validate_mmad_result(d)
    c = Checker()
    if not c.obj(d, "$"):
        return c.issues
    sv = d.get("schema_version")
    if "schema_version" not in d:
        c.err("$.schema_version", "is required")
    elif isinstance(sv, bool) or not isinstance(sv, int):
        c.err("$.schema_version", f"must be an integer (got {type_name(sv)})")
    elif sv != SCHEMA_VERSION:
        c.err("$.schema_version", f"unsupported schema version {sv} (this mmrbench reads {SCHEMA_VERSION})")

    prov = d.get("provenance")
    if prov not in PROVENANCES:
        c.err("$.provenance", f"must be one of {', '.join(PROVENANCES)} (got {short_text(prov)})")
    reported = prov == "reported"

    proto = d.get("protocol")
    if "protocol" not in d:
        c.err("$.protocol", "is required")
    elif c.obj(proto, "$.protocol"):
        c.string(proto, "name", "$.protocol")
        c.string(proto, "prompt_variant", "$.protocol", required=False, nullable=True)

    model = d.get("model")
    if "model" not in d:
        c.err("$.model", "is required")
    elif c.obj(model, "$.model"):
        c.string(model, "name", "$.model")
        for k in ("provider", "model_id", "convention", "kind", "recipe"):
            c.string(model, k, "$.model", required=False, nullable=True)

    ds = d.get("dataset")
    if "dataset" not in d:
        c.err("$.dataset", "is required")
    elif c.obj(ds, "$.dataset"):
        c.string(ds, "name", "$.dataset")
        c.sha(ds, "manifest_sha256", "$.dataset", required=not reported)
        c.string(ds, "split", "$.dataset", required=False, nullable=True)
        subs = ds.get("subdatasets")
        if subs is not None and (not isinstance(subs, list) or not all(isinstance(s, str) and s for s in subs)):
            c.err("$.dataset.subdatasets", "must be a list of subdataset names")

    metrics = d.get("metrics")
    if "metrics" not in d:
        c.err("$.metrics", "is required")
    elif c.obj(metrics, "$.metrics"):
        subs_m = metrics.get("subdatasets")
        if not isinstance(subs_m, dict) or not subs_m:
            c.err("$.metrics.subdatasets", "must be a non-empty object of subdataset -> metrics")
        else:
            for name, block in subs_m.items():
                path = f"$.metrics.subdatasets.{name}"
                if not SUBDATASET_RE.match(name):
                    c.err(f"$.metrics.subdatasets[{json.dumps(name)[:70]}]",
                          "subdataset names are letters, digits, space, _ . + - (at most 64 characters)")
                    continue
                _check_metric_block(c, block, path, nullable=reported)
                if isinstance(block, dict) and "categories" in block:
                    cats = block["categories"]
                    if not isinstance(cats, list):
                        c.err(f"{path}.categories", "must be an array")
                        continue
                    for i, cat in enumerate(cats):
                        cp = f"{path}.categories[{i}]"
                        if c.obj(cat, cp):
                            c.string(cat, "category", cp)
                            _check_metric_block(c, cat, cp, nullable=False)
        if "iou_threshold" in metrics:
            c.fraction(metrics["iou_threshold"], "$.metrics.iou_threshold", nullable=False)

    c.sha(d, "predictions_sha256", "$", required=not reported)
    if "harness" in d and d["harness"] is not None:
        c.obj(d["harness"], "$.harness")
    c.string(d, "date", "$", required=False, nullable=True, max_len=64)
    c.string(d, "notes", "$", required=False, nullable=True, max_len=MAX_NOTES_CHARS, nonempty=False)

    det = d.get("detector")
    if det is not None and c.obj(det, "$.detector"):
        for key in ("threshold_oracle", "threshold_fair"):
            if key not in det or det[key] is None:
                continue
            t = det[key]
            if isinstance(t, dict):
                for sub, v in t.items():
                    c.fraction(v, f"$.detector.{key}.{sub}", nullable=False)
            else:
                c.fraction(t, f"$.detector.{key}", nullable=False)
    if "variant" in d and d["variant"] is not None:
        c.string(d, "variant", "$", max_len=64)
    for k in d:
        if k not in KNOWN_KEYS and k not in KNOWN_EXTRA:
            c.warn(f"$.{k}", "unknown key (kept, not checked)")
    return c.issues


def check_result(d: Any, where: str = "result") -> list[Issue]:
    """Raise :class:`ResultValidationError` on any error; return the warnings otherwise."""
    issues = validate_result(d)
    errors = [i for i in issues if not i.warning]
    if errors:
        raise ResultValidationError(where, errors)
    return issues
