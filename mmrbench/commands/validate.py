"""``mmrbench validate FILE``: strict schema check of a result.json (and its run folder's predictions)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a result.json (or run folder) against the result schema")
    p.add_argument("file", help="result.json, or a run folder holding result.json and predictions.jsonl")
    p.add_argument("--manifest", default=None, help="also re-score against this manifest (verification)")
    p.add_argument("--manifests", action="append", default=[], metavar="DIR",
                   help="folder searched for the manifest named by sha256 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from mmrbench.leaderboard.schema import check_result, load_result_json
    from mmrbench.leaderboard.verify import find_predictions, load_predictions, verify_entry

    path = Path(args.file)
    result = load_result_json(path)
    warnings = check_result(result, str(path))
    for w in warnings:
        print(f"{path}: {w}", file=sys.stderr)
    base = path if path.is_dir() else path.parent
    preds = find_predictions(base)
    if preds is not None:
        n = len(load_predictions(preds)[0])  # raises a one-line error on a bad line
        print(f"{preds}: {n} predictions read")
    if args.manifest or args.manifests:
        ver = verify_entry(result, predictions=preds, manifest=args.manifest, manifest_stores=args.manifests)
        print(f"{path}: {ver.status}")
        for r in ver.reasons:
            print(f"  - {r}")
        if ver.status == "unverified":
            return 1
    print(f"{path}: valid result (schema version {result['schema_version']}, provenance {result['provenance']})")
    return 0
