"""``mmrbench data synth``: write the bundled synthetic MMR-AD benchmark (no download needed)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="generate the bundled synthetic benchmark (deterministic, no download)")
    p.add_argument("--out", required=True, help="output folder (manifest.jsonl, images/, masks/, info.json)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed => identical files (default 0)")
    p.add_argument("--scale", choices=("small", "default"), default="default",
                   help="small: 8/3/4 images per category (tests); default: 24/8/10")
    p.add_argument("--reference", choices=("retrieval", "nearest", "random", "first"), default=None,
                   help="how each test image's normal reference is chosen (default: the generator's default)")
    p.add_argument("--categories", default=None, help="comma-separated subset of categories (default: all)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder that holds no benchmark")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from tabulate import tabulate

    from mmrbench.data.synth import generate, reference_mismatch, summary_rows

    kw = {} if args.reference is None else {"reference": args.reference}
    if args.categories:
        kw["categories"] = [c for c in args.categories.split(",") if c]
    manifest = generate(args.out, seed=args.seed, scale=args.scale, force=args.force, progress=True, **kw)
    info = json.loads((Path(manifest).parent / "info.json").read_text(encoding="utf-8"))
    rows = summary_rows(info)
    rows.append(["total", sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows),
                 sum(r[4] for r in rows), sum(r[5] for r in rows)])
    print(tabulate(rows, headers=["subdataset", "categories", "train", "test normal", "test anomalous", "boxes"]))
    print(f"anomaly types: {', '.join(info['anomaly_types'])}")
    print(f"manifest: {manifest}")
    print(f"sha256:   {info['manifest_sha256']}")
    why = reference_mismatch(info)
    if why:
        print(f"warning: {why}", file=sys.stderr)
    return 0
