"""``mmrbench data build --sources SOURCES.toml --out DIR``: MMR-AD from the user's own copies."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="import every source you have into one MMR-AD manifest with the paper's split",
                       description="Reads SOURCES.toml (one [<Source>] table with root = \"...\" per dataset you "
                                   "have), imports each source category by category (resumable), gives every sample "
                                   "a reference from its category's training normals and writes DIR/manifest.jsonl, "
                                   "DIR/train.jsonl, DIR/test.jsonl and DIR/build.json.")
    p.add_argument("--sources", required=True, help="SOURCES.toml")
    p.add_argument("--out", required=True, help="output folder (rerun with the same arguments to resume)")
    p.add_argument("--sample", choices=("paper",), default=None,
                   help="paper: sample each source to its Table 1 image count (whole objects, seeded)")
    p.add_argument("--reference", choices=("retrieval", "random", "first", "none"), default="retrieval",
                   help="how each sample's normal reference is chosen (default: retrieval, DESIGN App. B)")
    p.add_argument("--holdout", default=None,
                   help="comma-separated held-out sources (default the paper's MVTecAD,VisA,MVTec3D,MPDD)")
    p.add_argument("--on-leak", choices=("error", "drop"), default="drop",
                   help="a training category with a held-out category's name: drop it from training (default) or fail")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mmrbench.data.build import PAPER_COUNTS, PAPER_HOLDOUT, build

    hold = tuple(h for h in args.holdout.split(",") if h) if args.holdout else PAPER_HOLDOUT
    rep = build(args.sources, args.out, sample=args.sample, reference=args.reference, seed=args.seed,
                holdout=hold, on_leak=args.on_leak, progress=True)
    rows = []
    for name, d in rep.per_source.items():
        rows.append([name, d["gad_split"], len(d["categories"]), d["samples"], d.get("available", ""),
                     PAPER_COUNTS.get(name, "")])
    print(tabulate(rows, headers=["source", "side", "categories", "samples", "available", "Table 1"]))
    for leak in rep.dropped_categories:
        print(f"dropped from training (leakage): {leak}")
    if rep.resumed_parts:
        print(f"resumed: {rep.resumed_parts} finished categor{'y' if rep.resumed_parts == 1 else 'ies'} reused")
    print(f"manifest: {rep.manifest} ({rep.samples} samples, {rep.seconds:.1f} s)")
    print(f"sha256:   {rep.sha256}")
    return 0
