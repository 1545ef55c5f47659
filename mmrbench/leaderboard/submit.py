"""Storing a verified run under ``results/<canonical-name>/``.

The canonical name is ``<model-slug>-<manifest sha256[:8]>[-<variant>]``, so the same model on another
manifest or with another prompt variant gets its own entry. The entry keeps the submitted
``result.json`` byte for byte, the predictions gzipped deterministically (their sha256 is over the
decompressed bytes, as in the result) and a ``verification.json`` for humans; the leaderboard never
trusts that file, it re-verifies at every build.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.mmad import check_mmad_result, is_mmad_result, verify_mmad_entry
from mmrbench.leaderboard.reference import slugify
from mmrbench.leaderboard.schema import check_result, load_result_json
from mmrbench.leaderboard.verify import (UNVERIFIED, Verification, find_predictions, gzip_bytes,
                                         read_predictions_bytes, verify_entry)


def canonical_name(result: dict[str, Any]) -> str:
    from mmrbench.leaderboard.mmad import is_mmad_result
    if is_mmad_result(result):  # mmad-<model>-<mmad.json sha256[:8]>-<shots>shot[-<mode>]
        model = slugify(str((result.get("model") or {}).get("name") or "model"))[:60]
        sha = str((result.get("dataset") or {}).get("sha256") or "nosha")[:8]
        proto = result.get("protocol") or {}
        mode = (result.get("metrics") or {}).get("mode")
        return (f"mmad-{model}-{sha}-{proto.get('shots')}shot-{slugify(str(proto.get('templates') or 'random'))}"
                f"-{slugify(str(proto.get('ask') or 'ad-first'))}" + ("" if mode == "strict" else f"-{slugify(str(mode))}"))
    model = slugify(str((result.get("model") or {}).get("name") or "model"))[:60]
    sha = str((result.get("dataset") or {}).get("manifest_sha256") or "nomanifest")[:8]
    variant = result.get("variant") or (result.get("protocol") or {}).get("prompt_variant") or "default"
    name = f"{model}-{sha}"
    if variant != "default":
        name += f"-{slugify(str(variant))[:40]}"
    return name


def submit_run(run_dir: str | os.PathLike, *, results_dir: str | os.PathLike, manifest: str | os.PathLike | None = None,
               manifest_stores: Iterable[str | os.PathLike] = (), allow_unverified: bool = False,
               replace: bool = False) -> tuple[Path, Verification]:
    """Validate and verify ``run_dir``; store it; return (entry folder, verification).

    A submission that does not verify is rejected (``MMRBenchError`` listing every reason) unless
    ``allow_unverified``; reported rows cannot be submitted (they are added with their source).
    """
    src = Path(run_dir)
    if not src.is_dir():
        raise MMRBenchError(f"run folder not found: {src}")
    result = load_result_json(src)
    mmad = is_mmad_result(result)
    if mmad:
        check_mmad_result(result, str(src / "result.json"))
    else:
        check_result(result, str(src / "result.json"))
    if result.get("provenance") != "run":
        raise MMRBenchError(f"{src}: only provenance 'run' can be submitted (reported rows are added with their source)")
    pred_path = find_predictions(src)
    if mmad:  # --manifest names the mmad.json (or its folder); stores are searched for mmad.json by sha256
        ver: Verification = verify_mmad_entry(result, predictions=pred_path, mmad_json=manifest, stores=manifest_stores)
    else:
        ver = verify_entry(result, predictions=pred_path, manifest=manifest,
                           manifest_stores=manifest_stores)  # never a manifest a submitter put in results/
    if ver.status == UNVERIFIED and not allow_unverified:
        raise MMRBenchError(f"submission rejected ({src}): " + "; ".join(ver.reasons))
    dest = Path(results_dir) / canonical_name(result)
    if dest.exists():
        old = load_result_json(dest) if (dest / "result.json").is_file() else {}
        if old.get("predictions_sha256") != result.get("predictions_sha256") and not replace:
            raise MMRBenchError(f"{dest} already holds other predictions for this model, manifest and variant "
                                "(use --replace to overwrite)")
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copyfile(src / "result.json", tmp / "result.json")
    if pred_path is not None:
        (tmp / "predictions.jsonl.gz").write_bytes(gzip_bytes(read_predictions_bytes(pred_path)))
    (tmp / "verification.json").write_text(json.dumps(ver.to_json(), indent=2) + "\n", encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest, ver
