"""``mmrbench merge``: the run folders of ``--shard I/N`` runs combined into one scored run."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from mmrbench.data.manifest import read_manifest
from mmrbench.errors import ConfigError
from mmrbench.predictions import Prediction, load_latest
from mmrbench.rundir import RunLock, atomic_write_json, prepare_run_dir
from mmrbench.runinfo import RUN, run_tag, scrub_argv, summarize
from mmrbench.runner import finalize
from mmrbench.selection import select_samples

PREDICTIONS = "predictions.jsonl"
RESULT = "result.json"


def merge_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
               manifest_path: str | os.PathLike | None = None, quiet: bool = False):
    """Combine the run folders of ``--shard I/N`` runs into one scored run.

    Checks that all runs share the manifest, model, sampling, prompt and selection, that shards are
    distinct and that no id was answered by two runs; the merged result is scored on the unsharded
    selection, so it equals an unsharded run's result (missing shards show up as missing samples).
    """
    from mmrbench.provenance import now_iso

    if not run_dirs:
        raise ConfigError("merge needs at least one run folder")
    infos = []
    for d in run_dirs:
        p = Path(d) / RUN
        if not p.is_file():
            raise ConfigError(f"{d}: no {RUN} (not a run folder written by 'mmrbench eval')")
        try:
            infos.append((Path(d), json.loads(p.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from None
    first = infos[0][1]
    keys = ("manifest_sha256", "provider", "model_id", "convention", "sampling", "prompt_variant", "prompt_version")
    for d, info in infos[1:]:
        for k in keys:
            if info["fingerprint"].get(k) != first["fingerprint"].get(k):
                raise ConfigError(f"cannot merge: {d} differs from {infos[0][0]} in {k}")
        for k in ("split", "subdatasets", "limit"):
            if info["selection"].get(k) != first["selection"].get(k):
                raise ConfigError(f"cannot merge: {d} differs from {infos[0][0]} in --{k}")
    shards = [info["selection"].get("shard") for _, info in infos]
    if len(infos) > 1 and len(set(shards)) != len(shards):
        raise ConfigError(f"cannot merge: the same shard appears twice ({', '.join(str(s) for s in shards)})")
    ns = {int(s.split("/")[1]) for s in shards if s}
    if len(ns) > 1:
        raise ConfigError(f"cannot merge shards of different splits: {', '.join(str(s) for s in shards)}")

    mpath = Path(manifest_path) if manifest_path else Path(first["manifest_path"])
    manifest = read_manifest(mpath, check_files=False)
    if manifest.sha256 != first["fingerprint"]["manifest_sha256"]:
        raise ConfigError(f"{mpath} is not the manifest the runs used (sha256 differs)")
    sel = first["selection"]
    samples = select_samples(manifest, split=sel.get("split"), subdatasets=sel.get("subdatasets"),
                             limit=sel.get("limit"))
    wanted = {s.id for s in samples}
    merged: dict[str, Prediction] = {}
    owner: dict[str, Path] = {}
    for d, _ in infos:
        for sid, pred in load_latest(d / PREDICTIONS).items():
            if sid not in wanted:
                continue
            if sid in merged:
                raise ConfigError(f"cannot merge: sample '{sid}' was answered in both {owner[sid]} and {d}")
            merged[sid] = pred
            owner[sid] = d
    out = Path(out_dir)
    if out.resolve() in {d.resolve() for d, _ in infos}:
        raise ConfigError("merge --out must be a new folder, not one of the inputs")
    prepare_run_dir(out)
    card_json = first["model"]
    fp = dict(first["fingerprint"], shard=None)
    # the merged lines belong to the merged (unsharded) run: the same tag an unsharded run has
    merged = {sid: dataclasses.replace(p, run=run_tag(fp)) for sid, p in merged.items()}
    missing = len(wanted) - len(merged)
    with RunLock(out):
        result, report = finalize(out, card_json=card_json, manifest=manifest, samples=samples, preds=merged,
                                  variant=first["prompt_variant"], split=sel.get("split"), limit=sel.get("limit"),
                                  shard=None)
        atomic_write_json(out / RUN, {
            "command": scrub_argv(sys.argv), "fingerprint": fp, "manifest_path": str(manifest.path.resolve()),
            "manifest_sha256": manifest.sha256, "model": card_json, "selection": {**sel, "shard": None},
            "prompt_variant": first["prompt_variant"], "merged_from": [str(d) for d, _ in infos],
            "n_selected": len(samples), "n_missing": missing, "state": "complete", "finished": now_iso(),
            "predictions_sha256": result.predictions_sha256})
    result.run_summary = summarize(samples, merged)
    if not quiet:
        if missing:
            print(f"warning: {missing} of {len(samples)} samples have no prediction in these runs "
                  f"(a shard is missing or unfinished); they are scored as missing", file=sys.stderr)
        print(report.render("table"))
        print(f"wrote {out / RESULT}")
    return result
