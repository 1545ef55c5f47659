"""``mmrbench leaderboard build``: LEADERBOARD.md + index.html from a results folder."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="build the leaderboard (Markdown + static web page)")
    lsub = p.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    lsub.required = True
    b = lsub.add_parser("build", help="verify every entry under --results and write --out/LEADERBOARD.md and index.html")
    b.add_argument("--results", default="results", help="results folder (default: results/)")
    b.add_argument("--out", default="leaderboard", help="output folder (default: leaderboard/)")
    b.add_argument("--manifests", action="append", default=[], metavar="DIR",
                   help="folder searched for manifests by sha256 (repeatable; the results folder is always searched)")
    b.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per run (0: no intervals)")
    b.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    b.add_argument("--samples-per-run", type=int, default=24, help="samples per run in the viewer (thumbnails)")
    b.add_argument("--print", dest="print_md", action="store_true", help="also print LEADERBOARD.md")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmrbench.leaderboard.board import write_leaderboard
    from mmrbench.provenance import now_iso

    board = write_leaderboard(args.results, args.out, manifest_stores=args.manifests, resamples=args.resamples,
                              seed=args.seed, samples_per_run=args.samples_per_run, generated=now_iso())
    counts: dict[str, int] = {}
    for e in board.entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"{len(board.entries)} entries ({summary}) -> {Path(args.out) / 'LEADERBOARD.md'}, {Path(args.out) / 'index.html'}")
    for s in board.skipped:
        print(f"skipped: {s}")
    if args.print_md:
        print((Path(args.out) / "LEADERBOARD.md").read_text(encoding="utf-8"))
    return 0
