"""``mmrbench data split MANIFEST --holdout A,B --out DIR``: cross-dataset train/test manifests."""
from __future__ import annotations

import argparse

DEFAULT_HOLDOUT = "MVTecAD,VisA,MVTec3D,MPDD"


def add_parser(sub) -> None:
    p = sub.add_parser("split", help="general-AD splits: train on some subdatasets, test on held-out ones",
                       description="Writes DIR/train.jsonl (all samples of the other subdatasets), DIR/test.jsonl "
                                   "(the held-out subdatasets) and DIR/split.json; no category may appear on both sides.")
    p.add_argument("manifest", help="manifest.jsonl (or its folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--holdout", default=None,
                   help=f"comma-separated held-out subdatasets (default {DEFAULT_HOLDOUT}; with the synthetic "
                        "benchmark, the Syn* names of those present)")
    p.add_argument("--test", dest="holdout", default=None, help="alias of --holdout")
    p.add_argument("--train", default=None,
                   help="comma-separated training subdatasets (default: every one not held out)")
    p.add_argument("--leave-one-out", "--leave-one-source-out", dest="leave_one_out", action="store_true",
                   help="one split per subdataset, in DIR/<subdataset>/ (with --train: only among those)")
    p.add_argument("--on-leak", choices=("error", "drop"), default="error",
                   help="a category name on both sides: fail (default) or drop it from training")
    p.add_argument("--test-only", action="store_true",
                   help="leave the held-out subdatasets' normal training images out of test.jsonl")
    p.add_argument("--train-references", choices=("retrieval", "random", "first", "none"), default="retrieval",
                   help="reference for training samples that have none (another normal of the category)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def default_holdout(subdatasets: list[str]) -> list[str]:
    names = DEFAULT_HOLDOUT.split(",")
    real = [n for n in names if n in subdatasets]
    syn = [f"Syn{n}" for n in names if f"Syn{n}" in subdatasets]
    return real or syn


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tabulate import tabulate

    from mmrbench.data.manifest import read_manifest
    from mmrbench.data.splits import SplitError, holdout_split, leave_one_out, write_split

    manifest = read_manifest(args.manifest, check_files=False)
    kw = {"on_leak": args.on_leak, "test_only": args.test_only}
    train = [t for t in args.train.split(",") if t] if args.train else None
    if args.leave_one_out:
        if args.holdout:
            raise SplitError("--holdout and --leave-one-out exclude each other")
        splits = [(sp, Path(args.out) / sp.name) for sp in leave_one_out(manifest, train, **kw)]
    else:
        hold = [h for h in args.holdout.split(",") if h] if args.holdout else default_holdout(manifest.subdatasets)
        if not hold:
            raise SplitError(f"none of the default held-out subdatasets ({DEFAULT_HOLDOUT}) is in {manifest.path}; "
                             "pass --holdout")
        splits = [(holdout_split(manifest, hold, train=train, **kw), Path(args.out))]
    rows = []
    for sp, out in splits:
        files = write_split(sp, manifest, out, train_references=args.train_references, seed=args.seed)
        n_test = sum(1 for s in sp.test if s.split == "test")
        rows.append([sp.name, ",".join(sp.holdout), len(sp.train), n_test, len(sp.dropped_categories), str(files.train.parent)])
        for d in sp.dropped_categories:
            print(f"dropped from training (leakage): {d}")
    print(tabulate(rows, headers=["split", "held out", "train samples", "test samples", "dropped", "folder"]))
    return 0
