"""``mmrbench submit RUN_DIR``: validate, re-score, store under results/<canonical-name>/, rebuild the board."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("submit", help="verify a run (result.json + predictions.jsonl) and add it to the leaderboard")
    p.add_argument("run_dir", help="run folder holding result.json and predictions.jsonl[.gz]")
    p.add_argument("--results", default="results", help="leaderboard results folder (default: results/)")
    p.add_argument("--out", default="leaderboard", help="where the rebuilt board goes (default: leaderboard/)")
    p.add_argument("--manifest", default=None, help="the manifest the run was scored on (else found by sha256)")
    p.add_argument("--manifests", action="append", default=[], metavar="DIR",
                   help="folder searched for the manifest named by sha256 (repeatable)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="store a submission whose metrics cannot be reproduced (shown as unverified)")
    p.add_argument("--replace", action="store_true", help="replace an existing entry with other predictions")
    p.add_argument("--no-build", action="store_true", help="do not rebuild the leaderboard")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the rebuilt board")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrbench.leaderboard.submit import submit_run

    entry, ver = submit_run(args.run_dir, results_dir=args.results, manifest=args.manifest,
                            manifest_stores=args.manifests, allow_unverified=args.allow_unverified,
                            replace=args.replace)
    print(f"{ver.status}: stored as {entry}")
    for r in ver.reasons:
        print(f"  - {r}")
    if not args.no_build:
        from pathlib import Path

        from mmrbench.leaderboard.write import write_leaderboard
        from mmrbench.provenance import now_iso

        stores = list(args.manifests) + ([str(Path(args.manifest).parent)] if args.manifest else [])
        write_leaderboard(args.results, args.out, manifest_stores=stores, resamples=args.resamples,
                          generated=now_iso())
        print(f"leaderboard rebuilt: {Path(args.out) / 'LEADERBOARD.md'}, {Path(args.out) / 'index.html'}")
    return 0
