"""``mmrbench compare RUN_A RUN_B``: paired differences with bootstrap CIs and p-values."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="paired test between two runs on the same manifest")
    p.add_argument("run_a", help="run folder (result.json + predictions.jsonl[.gz]) of run A")
    p.add_argument("run_b", help="run folder of run B")
    p.add_argument("--manifest", default=None, help="the manifest both runs were scored on (else found by sha256)")
    p.add_argument("--manifests", action="append", default=[], metavar="DIR",
                   help="folder searched for the manifest by sha256 (repeatable)")
    p.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from mmrbench.leaderboard.compare import compare_runs
    from mmrbench.report import render_rows

    rows, info = compare_runs(args.run_a, args.run_b, manifest=args.manifest, manifest_stores=args.manifests,
                              resamples=args.resamples, seed=args.seed)
    if args.format == "json":
        print(json.dumps({**info, "rows": [vars(r) for r in rows]}, indent=2))
        return 0
    print(f"A = {info['a']}  B = {info['b']}  manifest {info['manifest_sha256'][:12]}...  "
          f"{args.resamples} paired resamples, seed {args.seed}; delta = B - A in points")
    table = []
    for r in rows:
        table.append({
            "subdataset": r.subdataset, "metric": f"{r.part}.{r.metric}", "A": f"{100 * r.a:.1f}",
            "B": f"{100 * r.b:.1f}", "delta": f"{100 * r.delta:+.1f}",
            "95% CI": f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]", "p (bootstrap)": f"{r.p_bootstrap:.3f}",
            "p (McNemar)": "" if r.p_mcnemar is None else f"{r.p_mcnemar:.3f}",
        })
    print(render_rows(table, args.format))
    return 0
