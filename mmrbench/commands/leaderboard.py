"""``mmrbench leaderboard build``: LEADERBOARD.md, index.html (and CSV/JSON exports) from a results folder."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="build the leaderboard (Markdown + static web page)")
    lsub = p.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    lsub.required = True
    b = lsub.add_parser("build", help="verify every entry under --results and write --out/LEADERBOARD.md, index.html, ...")
    b.add_argument("--results", default="results", help="results folder (default: results/)")
    b.add_argument("--out", default="leaderboard", help="output folder (default: leaderboard/)")
    b.add_argument("--manifests", action="append", default=[], metavar="DIR",
                   help="manifest file or folder searched by sha256 (repeatable); the only source of manifests, "
                        "benchmark names and thumbnails (nothing in --results is trusted for them)")
    b.add_argument("--format", default="md,html", metavar="LIST",
                   help="comma-separated outputs: md (LEADERBOARD.md), html (index.html), csv (leaderboard.csv), "
                        "json (leaderboard.json); default md,html")
    b.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per run (0: no intervals)")
    b.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    b.add_argument("--samples-per-run", type=int, default=24, help="samples per run in the viewer (thumbnails)")
    b.add_argument("--print", dest="print_md", action="store_true", help="also print LEADERBOARD.md")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmrbench.errors import MMRBenchError
    from mmrbench.leaderboard.write import FILE_NAMES, parse_formats, write_leaderboard
    from mmrbench.provenance import now_iso

    formats = parse_formats(args.format)
    for name, v in (("--resamples", args.resamples), ("--samples-per-run", args.samples_per_run)):
        if v < 0:
            raise MMRBenchError(f"{name} {v}: must be 0 or more")
    if args.print_md and "md" not in formats:
        raise MMRBenchError("--print needs md in --format")
    board = write_leaderboard(args.results, args.out, manifest_stores=args.manifests, resamples=args.resamples,
                              seed=args.seed, samples_per_run=args.samples_per_run, generated=now_iso(),
                              formats=formats)
    counts: dict[str, int] = {}
    for e in board.entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    written = ", ".join(str(Path(args.out) / FILE_NAMES[f]) for f in formats)
    print(f"{len(board.entries)} entries ({summary}) on {len(board.benchmarks)} benchmark(s) -> {written}")
    for s in board.skipped:
        print(f"skipped: {s}")
    if args.print_md:
        print((Path(args.out) / "LEADERBOARD.md").read_text(encoding="utf-8"))
    return 0
