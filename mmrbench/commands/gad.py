"""``mmrbench gad RUN...``: the source x model matrix of det/loc accuracy with bootstrap intervals."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("gad", help="general-AD view: source x model det/loc accuracy with intervals",
                       description="Reads run folders (result.json + predictions), bare result.json files or folders "
                                   "of runs, and prints one row per source (subdataset) and one column per model.")
    p.add_argument("runs", nargs="+", help="run folders, result.json files or folders containing runs")
    p.add_argument("--manifest", default=None, help="the manifest the runs were scored on (else found by sha256)")
    p.add_argument("--manifests", action="append", default=[], metavar="DIR",
                   help="folder searched for manifests by sha256 (repeatable)")
    p.add_argument("--label", choices=("model", "run"), default="model",
                   help="column per model name (default) or per run folder")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrbench.gad import gad_matrix, render

    mat = gad_matrix(args.runs, manifest=args.manifest, manifest_stores=args.manifests, resamples=args.resamples,
                     seed=args.seed, label=args.label)
    print(render(mat, args.format))
    return 0
