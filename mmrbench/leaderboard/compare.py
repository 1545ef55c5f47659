"""Paired comparison of two runs scored on the same manifest (``mmrbench compare``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.schema import check_result, load_result_json
from mmrbench.leaderboard.stats import DEFAULT_RESAMPLES, PairedRow, paired_compare, per_image_counts
from mmrbench.leaderboard.verify import (decisions_for, find_manifest, find_predictions, load_predictions,
                                         scored_samples)


def _load_run(run_dir: str | os.PathLike) -> tuple[dict[str, Any], list]:
    d = Path(run_dir)
    result = load_result_json(d)
    check_result(result, str(d))
    base = d if d.is_dir() else d.parent
    pred = find_predictions(base)
    if pred is None:
        raise MMRBenchError(f"{base}: no predictions.jsonl to compare")
    return result, load_predictions(pred)[0]


def _per_image(result, manifest, preds):
    samples = scored_samples(result, manifest)
    return per_image_counts(samples, decisions=decisions_for(result, samples, preds))


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                 manifest_stores: Iterable[str | os.PathLike] = (), resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> tuple[list[PairedRow], dict[str, Any]]:
    from mmrbench.data.manifest import read_manifest

    ra, pa = _load_run(run_a)
    rb, pb = _load_run(run_b)
    sha_a = (ra.get("dataset") or {}).get("manifest_sha256")
    sha_b = (rb.get("dataset") or {}).get("manifest_sha256")
    if sha_a != sha_b:
        raise MMRBenchError(f"the runs were scored on different manifests ({str(sha_a)[:12]}... vs {str(sha_b)[:12]}...): "
                            "a paired test needs the same samples")
    path = find_manifest(sha_a or "", manifest=manifest, stores=[*manifest_stores, Path(run_a).parent])
    if path is None or not path.is_file():
        raise MMRBenchError(f"manifest with sha256 {str(sha_a)[:12]}... not found: pass --manifest or --manifests DIR")
    man = read_manifest(path, check_files=False)
    if man.sha256 != sha_a:
        raise MMRBenchError(f"manifest hash mismatch: {path} hashes to {man.sha256[:12]}..., the runs claim {str(sha_a)[:12]}...")
    a, b = _per_image(ra, man, pa), _per_image(rb, man, pb)
    if set(a) != set(b):
        raise MMRBenchError(f"the runs cover different subdatasets ({sorted(a)} vs {sorted(b)})")
    try:
        rows = paired_compare(a, b, resamples=resamples, seed=seed)
    except ValueError as exc:
        raise MMRBenchError(str(exc)) from None
    info = {"a": str((ra.get("model") or {}).get("name")), "b": str((rb.get("model") or {}).get("name")),
            "manifest_sha256": man.sha256, "resamples": resamples, "seed": seed}
    return rows, info
