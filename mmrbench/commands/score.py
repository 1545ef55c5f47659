"""``mmrbench score``: Table-4 metrics of a predictions file against a manifest."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="score predictions.jsonl against a manifest (Table-4 metrics)")
    p.add_argument("--manifest", required=True, help="manifest.jsonl (or its folder)")
    p.add_argument("--predictions", required=True, help="predictions.jsonl")
    p.add_argument("--subdatasets", default=None, help="comma-separated subdatasets to score (default: all)")
    p.add_argument("--split", default="test", help="manifest split to score (default: test)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold for detector scores")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from mmrbench.data.manifest import read_manifest
    from mmrbench.predictions import read_predictions
    from mmrbench.scoring import score_predictions

    if args.threshold is not None:
        import math

        from mmrbench.errors import InputError
        if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
            raise InputError(f"must be a number in [0, 1] (detector scores are normalised per category), "
                             f"got {args.threshold}", path="command line", field="threshold")
    manifest = read_manifest(args.manifest, check_files=False)
    subs = [s for s in args.subdatasets.split(",") if s] if args.subdatasets else None
    samples = manifest.select(split=args.split, subdatasets=subs)
    if not samples:
        from mmrbench.errors import MMRBenchError
        raise MMRBenchError(f"no '{args.split}' samples in {manifest.path} for subdatasets {subs}")
    preds = read_predictions(args.predictions)
    report = score_predictions(samples, preds, threshold=args.threshold)
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.render(args.format))
    return 0
