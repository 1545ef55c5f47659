"""MMAD on the leaderboard: its published rows and ``mmad-v1`` runs, on boards of their own.

MMAD's numbers (seven multiple-choice subtasks, per source dataset, in percent) and MMR-AD's
(detection/localization fractions per subdataset) are different measurements, so an MMAD entry never
shares a table or a chart with an MMR-AD entry. Which MMAD board an entry lands on:

* **MMAD (published)**: MMAD's own rows (``results/mmad-reported/*``, generated from
  :func:`mmrbench.mmad.reported.load_reported`; shown as ``reported`` only while every value equals the
  shipped table), and runs on an ``mmad.json`` the maintainer declares to be MMAD's release: the file
  found by sha256 in a ``--manifests`` store has an ``mmad-info.json`` beside it saying
  ``{"benchmark": "MMAD"}`` (and optionally ``"mmad_sha256"``), or it holds MMAD's published counts
  (39,672 questions on 8,366 images of DS-MVTec, MVTec-LOCO, VisA and GoodsAD);
* **bundled synthetic vN, MMAD format (mmad.json xxxxxxxx)**: runs on the miniature that
  :mod:`mmrbench.mmad.synth` writes into ``SYNTH/images/mmad.json`` (recognised by the generator's
  ``info.json`` two folders up);
* **NAME (mmad.json xxxxxxxx)**: any other file in MMAD's format (NAME from ``mmad-info.json``, else
  the result's ``dataset.name``).

Trust is the same as for MMR-AD runs: an ``mmad-v1`` run is ``verified`` only when its predictions hash
to ``predictions_sha256``, an ``mmad.json`` with the claimed ``dataset.sha256`` is found in the
maintainer's stores (nothing in the results folder is used), and re-scoring the predictions with
:class:`mmrbench.mmad.task.MMADTask` on the same selection (shots, templates, ask mode, datasets,
``limit``, ``shard``) in the recorded scoring mode reproduces every cell to 1e-9.

Why over 400 lines: this is the second protocol's counterpart of ``schema.py``, ``verify.py`` and the
board rows together, kept in one module so the MMR-AD modules only dispatch to it (one ``is_mmad_result``
check each). It is the next candidate for the same three-way split; that split also removes the
lazy ``schema``/``verify`` -> ``mmad`` imports that ``tools/import_graph.py`` reports as a module cycle.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.checks import SHA256_RE, Checker, Issue, ResultValidationError, short_text, table_of
from mmrbench.leaderboard.checks import edited_reason
from mmrbench.leaderboard.checks import (REPORTED, TOLERANCE, UNVERIFIED, VERIFIED, Verification, sha256_file,
                                         find_predictions, load_predictions)

PROTOCOL = "mmad-v1"
PUBLISHED_KEY = "mmad-published"
PUBLISHED_NAME = "MMAD (published)"
#: the declaration a maintainer puts beside MMAD's release in a store
INFO_NAME = "mmad-info.json"
#: MMAD's release as published (paper, README): questions, images, source datasets
RELEASE_COUNTS = (39672, 8366, ("DS-MVTec", "GoodsAD", "MVTec-LOCO", "VisA"))
KIND_PUBLISHED, KIND_BASELINE = "mmad-published", "baseline"
KIND_ORDER = (KIND_PUBLISHED, "submitted", KIND_BASELINE)
AVERAGE = "Average"
#: where MMAD's published rows live in a results folder
REPORTED_DIR = "mmad-reported"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+()/-]{0,63}$")
MAX_ROWS, MAX_COLUMNS = 64, 32


def is_mmad_result(d: Any) -> bool:
    return isinstance(d, dict) and isinstance(d.get("protocol"), dict) and d["protocol"].get("name") == PROTOCOL


# -- schema ----------------------------------------------------------------------------------------
def validate_mmad_result(d: Any) -> list[Issue]:
    """Schema problems of an ``mmad-v1`` result (what :mod:`mmrbench.mmad.run` writes, or a reported row)."""
    from mmrbench.mmad.scoring import MODES

    c = Checker()
    if not c.obj(d, "$"):
        return c.issues
    if d.get("schema_version") != 1 or isinstance(d.get("schema_version"), bool):
        c.err("$.schema_version", f"must be 1 (got {short_text(d.get('schema_version'))})")
    prov = d.get("provenance")
    if prov not in ("run", "reported"):
        c.err("$.provenance", f"must be run or reported (got {short_text(prov)})")
    run = prov == "run"
    proto = d.get("protocol")
    if c.obj(proto, "$.protocol"):
        shots = proto.get("shots")
        if isinstance(shots, bool) or not isinstance(shots, int) or not 0 <= shots <= 64:
            c.err("$.protocol.shots", f"must be an integer 0-64 (got {short_text(shots)})")
        for k in ("templates", "ask"):
            c.string(proto, k, "$.protocol", required=run, max_len=32)
    model = d.get("model")
    if c.obj(model, "$.model"):
        c.string(model, "name", "$.model")
        for k in ("display_name", "provider", "model_id"):
            c.string(model, k, "$.model", required=False, nullable=True)
    ds = d.get("dataset")
    if c.obj(ds, "$.dataset"):
        c.string(ds, "name", "$.dataset")
        c.sha(ds, "sha256", "$.dataset", required=run)
        for k in ("limit", "n_questions", "n_images"):
            c.count(ds, k, "$.dataset")
        if "shard" in ds and ds["shard"] is not None and not (isinstance(ds["shard"], str) and re.fullmatch(r"\d{1,4}/\d{1,4}", ds["shard"])):
            c.err("$.dataset.shard", f"must be 'I/N' (got {short_text(ds['shard'])})")
        subs = ds.get("datasets")
        if subs is not None and (not isinstance(subs, list) or not all(isinstance(s, str) and s for s in subs)):
            c.err("$.dataset.datasets", "must be a list of source dataset names")
    m = d.get("metrics")
    if c.obj(m, "$.metrics"):
        if m.get("mode") not in MODES:
            c.err("$.metrics.mode", f"must be one of {', '.join(MODES)} (got {short_text(m.get('mode'))})")
        cols = m.get("columns")
        if not isinstance(cols, list) or not cols or len(cols) > MAX_COLUMNS or not all(
                isinstance(x, str) and _NAME_RE.match(x) for x in cols):
            c.err("$.metrics.columns", f"must be a list of 1-{MAX_COLUMNS} column names (letters, digits, space, _ . + ( ) / -)")
            cols = []
        rows = m.get("rows")
        if not isinstance(rows, dict) or not rows or len(rows) > MAX_ROWS:
            c.err("$.metrics.rows", f"must be an object of 1-{MAX_ROWS} dataset rows")
        else:
            for name, row in rows.items():
                p = f"$.metrics.rows[{json.dumps(name)[:70]}]"
                if not _NAME_RE.match(name):
                    c.err(p, "row names are letters, digits, space, _ . + ( ) / - (at most 64 characters)")
                    continue
                if not c.obj(row, p):
                    continue
                for col, v in row.items():
                    if cols and col not in cols:
                        c.err(f"{p}.{col[:40]}", "is not one of metrics.columns")
                    elif v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                            or not math.isfinite(v) or not 0 <= v <= 100):
                        c.err(f"{p}.{col}", f"must be a percentage in [0, 100] or null (got {short_text(v)})")
    c.sha(d, "predictions_sha256", "$", required=run)
    c.string(d, "date", "$", required=False, nullable=True, max_len=64)
    c.string(d, "notes", "$", required=False, nullable=True, max_len=20_000, nonempty=False)
    if prov == "reported":
        ref = d.get("reference")
        if c.obj(ref, "$.reference"):
            c.string(ref, "file", "$.reference", max_len=300)
    return c.issues


def check_mmad_result(d: Any, where: str = "result") -> None:
    errors = [i for i in validate_mmad_result(d) if not i.warning]
    if errors:
        raise ResultValidationError(where, errors)


# -- MMAD's published rows -------------------------------------------------------------------------
def _display(r) -> str:
    return r.model + (f" ({r.note})" if r.note else "")


def reported_entry(r) -> dict[str, Any]:
    """The ``result.json`` of one of MMAD's published tables (provenance ``reported``)."""
    from mmrbench.mmad.reported import SOURCE_COMMIT, SOURCE_REPO
    return {
        "schema_version": 1, "provenance": "reported",
        "protocol": {"name": PROTOCOL, "shots": r.shots, "scoring_mode": "mmad-compatible"},
        "model": {"name": _display(r), "model_id": r.model},
        "dataset": {"name": "MMAD"},
        "metrics": {"mode": "mmad-compatible", "columns": list(r.columns), "rows": r.rows},
        "reference": {"repo": SOURCE_REPO, "commit": SOURCE_COMMIT, "file": r.file, "blob": r.blob,
                      "citation": r.citation},
        "notes": "MMAD's published table (computed by MMAD's summary script: answers without a letter left out)",
    }


def reported_slug(r) -> str:
    from mmrbench.leaderboard.reference import slugify
    return "mmad-" + slugify(f"{r.shots}shot-{_display(r)}")


def write_mmad_reported_entries(results_dir: str | os.PathLike) -> list[Path]:
    """One ``mmad-reported/mmad-<shots>shot-<model>/result.json`` per shipped MMAD table (beside, not in,
    ``reported/``, which holds exactly the MMR-AD paper's rows)."""
    from mmrbench.mmad.reported import load_reported
    root = Path(results_dir) / REPORTED_DIR
    out = []
    for r in load_reported():
        p = root / reported_slug(r) / "result.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(reported_entry(r), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(p)
    return out


def check_mmad_reported(result: dict[str, Any]) -> list[str]:
    """Reasons a reported MMAD row is not MMAD's shipped table (empty: it is, value for value)."""
    from mmrbench.mmad.reported import load_reported
    file = table_of(result, "reference").get("file")
    shipped = {r.file: r for r in load_reported()}
    r = shipped.get(file) if isinstance(file, str) else None
    if r is None:
        return [f"not one of MMAD's shipped all_result tables: reference.file {short_text(file)}"]
    want = reported_entry(r)
    reasons = []
    if (result.get("model") or {}).get("name") != want["model"]["name"]:
        reasons.append(f"model.name is {short_text((result.get('model') or {}).get('name'))}, the shipped table is "
                       f"{want['model']['name']!r}")
    if (result.get("protocol") or {}).get("shots") != r.shots:
        reasons.append(f"protocol.shots is {short_text((result.get('protocol') or {}).get('shots'))}, the file says {r.shots}")
    m = result.get("metrics") or {}
    if m.get("mode") != "mmad-compatible":
        reasons.append("metrics.mode must be mmad-compatible (how MMAD computed its tables)")
    if list(m.get("columns") or []) != list(r.columns):
        reasons.append("metrics.columns differ from the shipped table")
    rows = m.get("rows") or {}
    if set(rows) != set(r.rows):
        reasons.append(f"rows {sorted(rows)} differ from the shipped table's {sorted(r.rows)}")
    for name in r.rows:
        for col, v in r.rows[name].items():
            got = (rows.get(name) or {}).get(col)
            if got != v:
                reasons.append(f"{name} {col} is {short_text(got)}, MMAD's {r.file} says {v!r}")
    if len(reasons) > 4:
        reasons = reasons[:4] + [f"(+{len(reasons) - 4} more differences)"]
    return ["reported row differs from MMAD's shipped table: " + x for x in reasons]


# -- runs -------------------------------------------------------------------------------------------
def find_mmad_json(sha256: str, stores: Iterable[str | os.PathLike] = ()) -> Path | None:
    """The ``mmad.json`` (or a store that is itself a file) whose bytes hash to ``sha256``."""
    for store in stores:
        s = Path(store)
        cands = [s] if s.is_file() else sorted(s.rglob("mmad.json")) if s.is_dir() else []
        for cand in cands:
            try:
                if sha256_file(cand) == sha256:
                    return cand
            except OSError:
                continue
    return None


@dataclass
class MMADVerification(Verification):
    json_path: Path | None = None
    release_counts: tuple | None = None  # (questions, images, datasets) of the mmad.json found


def _selection(result: dict[str, Any]) -> dict[str, Any]:
    ds = result.get("dataset") or {}
    shard = None
    if isinstance(ds.get("shard"), str):
        i, n = ds["shard"].split("/")
        shard = (int(i), int(n))
    limit = ds.get("limit") if isinstance(ds.get("limit"), int) and not isinstance(ds.get("limit"), bool) else None
    return {"datasets": ds.get("datasets") or None, "limit": limit, "shard": shard}


def rescore_mmad(result: dict[str, Any], data, preds) -> dict[str, Any]:
    """Score ``preds`` as the result says it was scored: same questions, same mode."""
    from mmrbench.mmad.task import MMADTask

    proto = result.get("protocol") or {}
    task = MMADTask(data, shots=int(proto.get("shots", 1)), templates=str(proto.get("templates", "random")),
                    ask=str(proto.get("ask", "ad-first")), mode=(result.get("metrics") or {}).get("mode", "strict"))
    queries = task.select(**_selection(result))
    n_q = (result.get("dataset") or {}).get("n_questions")
    got = sum(len(q.questions) for q in queries)
    if isinstance(n_q, int) and n_q != got:
        raise MMRBenchError(f"the recorded selection (datasets, limit, shard) gives {got} questions, the result "
                            f"claims {n_q} (a run with --categories cannot be re-selected)")
    by_id = {p.id: p for p in preds}
    return task.score(queries, by_id).to_json()


def compare_mmad(claimed: dict[str, Any], recomputed: dict[str, Any], tol: float = TOLERANCE) -> list[str]:
    diffs = []
    if claimed.get("mode") != recomputed["mode"]:
        diffs.append(f"mode claimed {short_text(claimed.get('mode'))} but re-scored {recomputed['mode']}")
    if list(claimed.get("columns") or []) != recomputed["columns"]:
        diffs.append(f"columns claimed {claimed.get('columns')} but the predictions score {recomputed['columns']}")
    c_rows, r_rows = claimed.get("rows") or {}, recomputed["rows"]
    if set(c_rows) != set(r_rows):
        diffs.append(f"rows claimed {sorted(c_rows)} but the predictions score {sorted(r_rows)}")
    for name in [n for n in r_rows if n in c_rows]:
        for col, rv in r_rows[name].items():
            cv = (c_rows[name] or {}).get(col)
            number = isinstance(cv, (int, float)) and not isinstance(cv, bool)
            same = (cv is None and rv is None) or (number and rv is not None and abs(cv - rv) <= tol)
            if not same:
                show = lambda v: "null" if v is None else f"{v:.4f}"  # noqa: E731
                diffs.append(f"{name} {col} claimed {show(cv) if number or cv is None else short_text(cv)} "
                             f"but recomputes to {show(rv)}")
    return diffs


def verify_mmad_entry(result: dict[str, Any], *, predictions: str | os.PathLike | None,
                      mmad_json: str | os.PathLike | None = None,
                      stores: Iterable[str | os.PathLike] = ()) -> MMADVerification:
    """Check one schema-valid ``mmad-v1`` result: reported rows against the shipped tables, runs by
    re-scoring their predictions against the ``mmad.json`` named by sha256."""
    from mmrbench.mmad.data import load_mmad
    from mmrbench.predictions import PredictionsError

    if result.get("provenance") == "reported":
        why = check_mmad_reported(result)
        return MMADVerification(UNVERIFIED if why else REPORTED, why)
    reasons: list[str] = []
    v = MMADVerification(UNVERIFIED, reasons)
    claimed_pred = result.get("predictions_sha256")
    claimed_sha = (result.get("dataset") or {}).get("sha256")
    preds = None
    if predictions is None or not Path(predictions).is_file():
        reasons.append("missing predictions: no predictions.jsonl to re-score")
    else:
        try:
            preds, v.predictions_sha256 = load_predictions(predictions)
        except (PredictionsError, OSError, EOFError, ValueError) as exc:
            reasons.append(f"unreadable predictions: {exc}")
        else:
            if v.predictions_sha256 != claimed_pred:
                reasons.append(f"predictions edited: predictions.jsonl hashes to {v.predictions_sha256[:12]}..., "
                               f"the result claims {str(claimed_pred)[:12]}...")
    path = Path(mmad_json) if mmad_json is not None else find_mmad_json(str(claimed_sha), stores)
    if path is not None and path.is_dir():
        path = path / "mmad.json"
    data = None
    if path is None or not path.is_file():
        reasons.append(f"mmad.json not found: no MMAD-format file with sha256 {str(claimed_sha)[:12]}... was given "
                       "or found in the manifest store")
    else:
        try:
            data = load_mmad(path)
        except MMRBenchError as exc:
            reasons.append(f"unreadable mmad.json: {exc}")
        else:
            v.json_path, v.manifest_sha256 = path, data.sha256
            v.release_counts = (len(data.questions), len(data.images), tuple(sorted({i.dataset for i in data.images})))
            if data.sha256 != claimed_sha:
                reasons.append(f"mmad.json hash mismatch: {path.name} hashes to {data.sha256[:12]}..., "
                               f"the result claims {str(claimed_sha)[:12]}...")
    if preds is not None and data is not None and not reasons:
        try:
            v.recomputed = rescore_mmad(result, data, preds)
        except MMRBenchError as exc:
            reasons.append(f"cannot re-score: {exc}")
        else:
            diffs = compare_mmad(result.get("metrics") or {}, v.recomputed)
            if diffs:
                reasons.append(edited_reason(diffs))
    if not reasons:
        v.status = VERIFIED
    return v


def identify_mmad_benchmark(result: dict[str, Any], ver: MMADVerification) -> tuple[str, str, str | None]:
    """(key, name, mmad.json sha256) of the MMAD board an entry belongs on."""
    if result.get("provenance") == "reported":
        return PUBLISHED_KEY, PUBLISHED_NAME, None
    ds = result.get("dataset") or {}
    sha = ds.get("sha256") if isinstance(ds.get("sha256"), str) and SHA256_RE.match(ds["sha256"]) else None
    path = ver.json_path if ver.manifest_sha256 == sha else None
    info: dict[str, Any] = {}
    if path is not None:
        try:
            raw = json.loads((path.parent / INFO_NAME).read_text(encoding="utf-8"))
            if isinstance(raw, dict) and raw.get("mmad_sha256") in (None, sha):
                info = raw
        except (OSError, ValueError, RecursionError):
            info = {}
    if path is not None and (info.get("benchmark") in ("MMAD", PUBLISHED_NAME) or (
            ver.release_counts is not None and ver.release_counts[0] == RELEASE_COUNTS[0]
            and ver.release_counts[1] == RELEASE_COUNTS[1] and ver.release_counts[2] == RELEASE_COUNTS[2])):
        return PUBLISHED_KEY, PUBLISHED_NAME, None
    synth = {}
    if path is not None:
        try:
            synth = json.loads((path.parent.parent / "info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            synth = {}
    if (path is not None and isinstance(synth, dict) and synth.get("generator") == "mmrbench.data.synth"
            and path.parent.name == "images"):
        name = f"bundled synthetic v{synth.get('generator_version')}, MMAD format"
    elif isinstance(info.get("benchmark"), str):
        name = info["benchmark"][:80]
    else:
        name = str(ds.get("name") or "MMAD-format data")[:80]
    if sha is None:
        return "mmad-no-sha", f"{name} (no mmad.json named)", None
    where = "" if path is not None else ", mmad.json not found"
    return f"mmad-sha-{sha[:16]}", f"{name} (mmad.json {sha[:8]}{where})", sha


def mmad_entry(d: Path, rel: str, result: dict[str, Any], stores: list) -> dict[str, Any]:
    """A board entry for an ``mmad-v1`` result (the renderers read ``entry["mmad"]``)."""
    ver = verify_mmad_entry(result, predictions=find_predictions(d), stores=stores)
    metrics = ver.recomputed if ver.status == VERIFIED and ver.recomputed else result["metrics"]
    model = result.get("model") or {}
    proto = result.get("protocol") or {}
    ds = result.get("dataset") or {}
    ref = table_of(result, "reference")
    if ver.status == REPORTED:
        kind = KIND_PUBLISHED
    elif ver.status == VERIFIED and model.get("provider") == "chance":
        kind = KIND_BASELINE
    else:
        kind = "submitted"
    total = ((metrics.get("counts") or {}).get("total") or {}) if isinstance(metrics.get("counts"), dict) else {}
    name = str(model.get("display_name") or model.get("name"))
    shots = proto.get("shots")
    detail = [f"{shots}-shot", f"{metrics.get('mode')} scoring"]
    if ver.status == REPORTED:
        detail.append(str(ref.get("file")))
    elif isinstance(total.get("questions"), int):
        detail.append(f"{total['questions']} questions")
    entry = {
        "id": rel, "name": name, "kind": kind, "provenance": result.get("provenance"), "status": ver.status,
        "reasons": ver.reasons, "variant": "default", "provider": model.get("provider"),
        "model_id": model.get("model_id"), "date": result.get("date"), "manifest_sha256": ds.get("sha256"),
        "predictions_sha256": result.get("predictions_sha256"), "cells": {}, "ci": None, "categories": [],
        "samples": [], "source": ref.get("citation") if ver.status == REPORTED else None,
        "notes": result.get("notes"), "section": "main", "ablation_row": None, "loc_reported": True,
        "detail": ", ".join(detail),
        "mmad": {"shots": shots, "mode": metrics.get("mode"), "templates": proto.get("templates"),
                 "ask": proto.get("ask"), "columns": list(metrics.get("columns") or []),
                 "rows": metrics.get("rows") or {}, "questions": total.get("questions"),
                 "file": ref.get("file") if ver.status == REPORTED else None},
    }
    entry["benchmark"], entry["benchmark_name"], _ = identify_mmad_benchmark(result, ver)
    return entry


def order_key(e: dict[str, Any]) -> tuple:
    """Published rows in the shipped order, then runs by name, then the chance level."""
    from mmrbench.mmad.reported import load_reported
    files = [r.file for r in load_reported()]
    f = (e.get("mmad") or {}).get("file")
    pos = files.index(f) if e["status"] == REPORTED and f in files else len(files)
    return (2, KIND_ORDER.index(e["kind"]) if e["kind"] in KIND_ORDER else len(KIND_ORDER), pos,
            e["name"].lower(), e["id"])


def board_columns(entries: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(columns, dataset rows) of an MMAD board: the subtasks any entry has, in MMAD's order, then
    ``Average``; ``Average`` row first, then the source datasets in order of appearance."""
    from mmrbench.mmad.data import SUBTASKS
    seen_cols: list[str] = []
    rows: list[str] = []
    for e in entries:
        for c in e["mmad"]["columns"]:
            if c not in seen_cols:
                seen_cols.append(c)
        for r in e["mmad"]["rows"]:
            if r not in rows and r != AVERAGE:
                rows.append(r)
    cols = [s for s in SUBTASKS if s in seen_cols] + [c for c in seen_cols if c not in SUBTASKS and c == AVERAGE]
    if AVERAGE not in cols:
        cols.append(AVERAGE)
    return cols, [AVERAGE] + rows


def value_of(e: dict[str, Any], row: str, col: str) -> float | None:
    v = ((e.get("mmad") or {}).get("rows") or {}).get(row, {}).get(col)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"



if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys
    for p in write_mmad_reported_entries(sys.argv[1] if len(sys.argv) > 1 else "results"):
        print(p)
