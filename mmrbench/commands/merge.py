"""``mmrbench merge``: combine sharded run folders into one scored run."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge the run folders of --shard runs into one result",
                       description="Combine run folders written by 'mmrbench eval --shard I/N' (same manifest, model "
                                   "and prompt; no sample answered twice) and score the union.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="new run folder for the merged result")
    p.add_argument("--data", default=None, metavar="MANIFEST", help="manifest path if it moved since the runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrbench.exitcodes import exit_code
    from mmrbench.merge import merge_runs
    return exit_code(merge_runs(args.runs, args.out, manifest_path=args.data))
