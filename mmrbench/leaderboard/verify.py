"""Re-score a submission and decide whether its claimed metrics can be trusted.

A submission is ``result.json`` + ``predictions.jsonl`` (or ``.jsonl.gz``) + the manifest the result
names by sha256. An entry is ``verified`` only when all three agree: the predictions hash to the
claimed ``predictions_sha256``, the manifest hashes to the claimed ``dataset.manifest_sha256``, and
scoring the predictions with :mod:`mmrbench.scoring` on the same split and subdatasets reproduces every
claimed metric to 1e-9. Anything else is ``unverified`` with every reason spelled out. Entries copied
from a paper are ``reported`` when they equal the shipped paper tables (nothing to re-score);
a reported row that differs is unverified.

Predictions are untrusted: read with size limits, parsed as JSON only, never evaluated.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

from mmrbench.data.manifest import Manifest, read_manifest
from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.checks import edited_reason
from mmrbench.leaderboard.checks import (  # noqa: F401 (re-exported: the names callers use from here)
    MAX_LINE_BYTES, MAX_PREDICTIONS_BYTES, PREDICTION_NAMES, REPORTED, TOLERANCE, UNVERIFIED, VERIFIED, Verification, find_predictions, load_predictions, parse_predictions_bytes, read_predictions_bytes, sha256_file)
from mmrbench.leaderboard.schema import check_result, load_result_json
from mmrbench.predictions import Prediction, PredictionsError
from mmrbench.scoring import METRICS  # one definition of the metric names: the scorer's



def _manifest_candidates(store: Path) -> Iterable[Path]:
    if store.is_file():
        yield store
        return
    if not store.is_dir():
        return
    yield from sorted(store.rglob("*.jsonl"))


def find_manifest(sha256: str, *, manifest: str | os.PathLike | None = None,
                  stores: Iterable[str | os.PathLike] = ()) -> Path | None:
    """The manifest file whose bytes hash to ``sha256``: the given path first, then the stores.

    A given path that does not match is still returned (the caller reports the mismatch); stores
    are searched for ``*.jsonl`` files (prediction files never match a manifest hash).
    """
    if manifest is not None:
        p = Path(manifest)
        return p / "manifest.jsonl" if p.is_dir() else p
    for store in stores:
        for cand in _manifest_candidates(Path(store)):
            if cand.name.startswith("predictions"):
                continue
            try:
                if sha256_file(cand) == sha256:
                    return cand
            except OSError:
                continue
    return None


def detector_threshold(result: dict[str, Any], subdataset: str, category: str | None = None) -> float | None:
    """Threshold a classical-detector result was scored at (the oracle one by protocol), if any.

    ``detector.threshold_oracle`` is one number, or a mapping keyed by ``"<subdataset>/<category>"``
    and/or ``"<subdataset>"`` (the most specific key wins).
    """
    det = result.get("detector")
    if not isinstance(det, dict):
        return None
    t = det.get("threshold_oracle")
    if isinstance(t, dict):
        t = t.get(f"{subdataset}/{category}", t.get(subdataset)) if category is not None else t.get(subdataset)
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


def decisions_for(result: dict[str, Any], samples, preds: list[Prediction]) -> dict:
    """Per-sample decisions as the scorer makes them, at each sample's detector threshold."""
    from mmrbench.scoring import decision_from_prediction

    by_id = {x.id: x for x in samples}
    out = {}
    for p in preds:
        x = by_id.get(p.id)
        if x is not None and p.id not in out:
            out[p.id] = decision_from_prediction(p, x, detector_threshold(result, x.subdataset, x.category))
    return out


def scored_samples(result: dict[str, Any], manifest: Manifest):
    """The samples a result was scored on, selected exactly as the runner selected them: split
    (``null`` = every split), subdatasets, then ``limit`` (first N) and ``shard`` ("I/N")."""
    from mmrbench.runner import parse_shard, select_samples

    ds = result.get("dataset") or {}
    split = ds["split"] if "split" in ds else "test"
    subs = ds.get("subdatasets") or list((result.get("metrics") or {}).get("subdatasets") or {}) or None
    limit = ds.get("limit") if isinstance(ds.get("limit"), int) and not isinstance(ds.get("limit"), bool) else None
    shard = parse_shard(ds["shard"]) if isinstance(ds.get("shard"), str) else None
    samples = select_samples(manifest, split=split, subdatasets=subs, limit=limit, shard=shard)
    if not samples:
        raise MMRBenchError(f"manifest {manifest.path} has no '{split}' samples for subdatasets {subs}")
    return samples


def rescore(result: dict[str, Any], manifest: Manifest, preds: list[Prediction]) -> dict[str, Any]:
    """Score ``preds`` exactly as the result says it was scored; returns ``ScoreReport.to_json()``.

    Same samples as the run (:func:`scored_samples`); detector lines at their oracle threshold
    (one, per subdataset, or per category).
    """
    from mmrbench.scoring import score_decisions

    iou = (result.get("metrics") or {}).get("iou_threshold")
    kw = {"iou_threshold": float(iou)} if isinstance(iou, (int, float)) and not isinstance(iou, bool) else {}
    samples = scored_samples(result, manifest)
    return score_decisions(samples, decisions_for(result, samples, preds), **kw).to_json()


def compare_metrics(claimed: dict[str, Any], recomputed: dict[str, Any], tol: float = TOLERANCE) -> list[str]:
    """Human-readable differences between claimed and recomputed metrics (empty when they agree)."""
    diffs: list[str] = []
    c_subs = claimed.get("subdatasets") or {}
    r_subs = recomputed.get("subdatasets") or {}
    if set(c_subs) != set(r_subs):
        diffs.append(f"subdatasets claimed {sorted(c_subs)} but the predictions score {sorted(r_subs)}")
    for sub in sorted(set(c_subs) & set(r_subs)):
        cb, rb = c_subs[sub], r_subs[sub]
        for part in ("det", "loc"):
            for m in METRICS:
                cv = (cb.get(part) or {}).get(m)
                rv = rb[part][m]
                if not isinstance(cv, (int, float)) or abs(float(cv) - rv) > tol:
                    diffs.append(f"{sub} {part}.{m} claimed {_fmt(cv)} but recomputes to {_fmt(rv)}")
        c_cats = {c.get("category"): c for c in cb.get("categories") or [] if isinstance(c, dict)}
        if c_cats:
            r_cats = {c["category"]: c for c in rb.get("categories", [])}
            if set(c_cats) != set(r_cats):
                diffs.append(f"{sub} categories claimed {sorted(map(str, c_cats))} but score {sorted(r_cats)}")
            for name in sorted(set(c_cats) & set(r_cats), key=str):
                for part in ("det", "loc"):
                    for m in METRICS:
                        cv = (c_cats[name].get(part) or {}).get(m)
                        rv = r_cats[name][part][m]
                        if not isinstance(cv, (int, float)) or abs(float(cv) - rv) > tol:
                            diffs.append(f"{sub}/{name} {part}.{m} claimed {_fmt(cv)} but recomputes to {_fmt(rv)}")
    return diffs


def _fmt(v: Any) -> str:
    return f"{v:.6f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else json.dumps(v)


def verify_entry(result: dict[str, Any], *, predictions: str | os.PathLike | None,
                 manifest: str | os.PathLike | None = None,
                 manifest_stores: Iterable[str | os.PathLike] = ()) -> Verification:
    """Check one parsed, schema-valid result against its predictions and manifest."""
    from mmrbench.leaderboard.mmad import is_mmad_result, verify_mmad_entry
    if is_mmad_result(result):  # MMAD: the "manifest" is the mmad.json (or its folder)
        return verify_mmad_entry(result, predictions=predictions, mmad_json=manifest, stores=manifest_stores)
    if result.get("provenance") == "reported":
        from mmrbench.leaderboard.reference import check_reported

        _, why = check_reported(result)  # only the shipped paper rows are shown as reported
        return Verification(UNVERIFIED if why else REPORTED, why)
    reasons: list[str] = []
    v = Verification(UNVERIFIED, reasons)
    claimed_pred_sha = result.get("predictions_sha256")
    claimed_man_sha = (result.get("dataset") or {}).get("manifest_sha256")

    preds: list[Prediction] | None = None
    if predictions is None or not Path(predictions).is_file():
        reasons.append("missing predictions: no predictions.jsonl to re-score")
    else:
        try:
            preds, v.predictions_sha256 = load_predictions(predictions)
        except (PredictionsError, OSError, EOFError, ValueError, zlib.error) as exc:
            reasons.append(f"unreadable predictions: {exc}")
        else:
            if v.predictions_sha256 != claimed_pred_sha:
                reasons.append(f"predictions edited: predictions.jsonl hashes to {v.predictions_sha256[:12]}..., "
                               f"the result claims {str(claimed_pred_sha)[:12]}...")

    man_path = find_manifest(claimed_man_sha or "", manifest=manifest, stores=manifest_stores)
    man: Manifest | None = None
    if man_path is None:
        reasons.append(f"manifest not found: no manifest with sha256 {str(claimed_man_sha)[:12]}... was given "
                       "or found in the manifest store")
    elif not man_path.is_file():
        reasons.append(f"manifest not found: {man_path}")
    else:
        try:
            man = read_manifest(man_path, check_files=False)
        except MMRBenchError as exc:
            reasons.append(f"unreadable manifest: {exc}")
        else:
            v.manifest_sha256 = man.sha256
            if man.sha256 != claimed_man_sha:
                reasons.append(f"manifest hash mismatch: {man_path.name} hashes to {man.sha256[:12]}..., "
                               f"the result claims {str(claimed_man_sha)[:12]}...")

    if preds is not None and man is not None:
        try:
            v.recomputed = rescore(result, man, preds)
        except MMRBenchError as exc:
            reasons.append(f"cannot re-score: {exc}")
        else:
            diffs = compare_metrics(result.get("metrics") or {}, v.recomputed)
            if diffs:
                reasons.append(edited_reason(diffs))
    if not reasons:
        v.status = VERIFIED
    return v


def verify_run_dir(run_dir: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                   manifest_stores: Iterable[str | os.PathLike] = ()) -> tuple[dict[str, Any], Verification]:
    """Load, schema-check and verify a run folder (``result.json`` + predictions)."""
    d = Path(run_dir)
    result = load_result_json(d)
    check_result(result, str(d / "result.json") if d.is_dir() else str(d))
    base = d if d.is_dir() else d.parent
    return result, verify_entry(result, predictions=find_predictions(base), manifest=manifest,
                                manifest_stores=manifest_stores)


def gzip_bytes(raw: bytes) -> bytes:
    """Deterministic gzip (mtime 0) so re-submitting the same run gives the same file."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(raw)
    return buf.getvalue()
