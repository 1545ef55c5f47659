"""``mmrbench data check MANIFEST``: validate a manifest and decode every file it names."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="validate a manifest and decode every image/reference/mask (exit 2 on problems)")
    p.add_argument("manifest", help="manifest.jsonl (or its folder)")
    p.add_argument("--boxes", action="store_true", help="also require boxes == connected components of the mask")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from mmrbench.data.check import check_manifest
    from mmrbench.data.manifest import read_manifest

    manifest = read_manifest(args.manifest, check_files=False)
    rep = check_manifest(manifest, progress=True, boxes=args.boxes)
    for line in rep.problems:
        print(line, file=sys.stderr)
    status = "OK" if rep.ok else f"{len(rep.problems)} problem(s)"
    print(f"{manifest.path}: {rep.samples} samples, {rep.files} files decoded: {status}")
    return 0 if rep.ok else 2
