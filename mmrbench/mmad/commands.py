"""Command-line entries for MMAD, in the shape of ``mmrbench/commands/*`` (``add_parser(sub)`` + ``run``).

Registered as ``mmrbench mmad COMMAND`` (``python -m mmrbench.mmad COMMAND`` is the same):

* ``import ROOT --out DIR``   check a release and write DIR/questions.jsonl + DIR/info.json
  (also ``mmrbench data import mmad ROOT --out DIR``);
* ``eval --model SPEC --data ROOT --out DIR [...]``  run protocol mmad-v1 through any adapter;
* ``merge RUN... --data ROOT --out DIR``  join shard runs into one scored run;
* ``synth SYNTH_DIR``  write the MMAD-format miniature of a synthetic benchmark;
* ``score-answers FILE``  re-score an answers JSON written by MMAD's own scripts;
* ``reported``  list MMAD's published tables shipped with the package.
"""
from __future__ import annotations

import argparse
import sys

from mmrbench.errors import ConfigError


def add_import_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="check an MMAD release (mmad.json + images) and index its questions")
    p.add_argument("root", help="folder holding mmad.json (or the file itself)")
    p.add_argument("--out", required=True, help="output folder for questions.jsonl and info.json")
    p.add_argument("--images-root", default=None, help="folder the image paths are relative to (default: ROOT)")
    p.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="do not check that every image and template exists")
    p.set_defaults(func=run_import)
    return p


def run_import(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mmrbench.mmad.data import SUBTASKS, import_mmad
    info = import_mmad(args.root, args.out, images_root=args.images_root, check_images=args.check_images)
    rows = [[ds] + [c.get(s, 0) for s in SUBTASKS] for ds, c in info["per_dataset"].items()]
    print(tabulate(rows, headers=["dataset", *SUBTASKS]))
    print(f"{info['images']} images, {info['questions']} questions; sha256 {info['sha256']}")
    return 0


def _shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard '{text}': expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard '{text}': need 0 <= I < N")
    return i, n


def add_eval_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="evaluate a model on MMAD (protocol mmad-v1)")
    p.add_argument("--model", required=True, help="model spec (openai:gpt-4o, hf:..., scripted:FILE) or card")
    p.add_argument("--data", required=True, help="folder holding mmad.json (or the file)")
    p.add_argument("--out", required=True, help="run folder (predictions.jsonl, result.json); re-run to resume")
    p.add_argument("--images-root", default=None)
    p.add_argument("--shots", type=int, default=1, help="normal templates per query (default 1, as MMAD)")
    p.add_argument("--templates", choices=("random", "similar"), default="random")
    p.add_argument("--ask", choices=("ad-first", "separate"), default="ad-first",
                   help="ad-first: detection question alone, then the rest as one list (default); separate: one request per question")
    p.add_argument("--mode", choices=("strict", "mmad-compatible"), default="strict",
                   help="strict (default): an answer without a letter is wrong; mmad-compatible: left out, as MMAD's summary")
    p.add_argument("--domain-knowledge", default=None, help="MMAD's domain_knowledge.json")
    p.add_argument("--dataset", action="append", default=None, help="only this source dataset (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="first N images")
    p.add_argument("--shard", default=None, help="I/N: the I-th of N disjoint parts (by image)")
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL")
    p.add_argument("--max-cost", type=float, default=None, metavar="USD",
                   help="stop sending once the estimated spend reaches USD (needs the card's prices); resumable, exit 3")
    p.add_argument("--dry-run", action="store_true",
                   help="estimate tokens and cost of what would be asked; send and write nothing")
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    import math

    from mmrbench.exitcodes import exit_code
    from mmrbench.mmad.run import evaluate_mmad
    if args.max_cost is not None and not (math.isfinite(args.max_cost) and args.max_cost > 0):
        raise ConfigError(f"--max-cost must be a positive number of US dollars, got {args.max_cost}")
    sel = dict(shots=args.shots, templates=args.templates, ask=args.ask, mode=args.mode,
               domain_knowledge=args.domain_knowledge, images_root=args.images_root, datasets=args.dataset,
               limit=args.limit, shard=_shard(args.shard), base_url=args.base_url, max_cost=args.max_cost)
    if args.dry_run:
        from mmrbench.mmad.run import estimate_mmad
        print(estimate_mmad(args.model, args.data, args.out, **sel))  # type: ignore[arg-type]
        return 0
    return exit_code(evaluate_mmad(args.model, args.data, args.out, concurrency=args.concurrency, quiet=False,
                                   **sel))  # type: ignore[arg-type]


def add_merge_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("merge", help="join the shard runs (--shard I/N) of one model into one scored run")
    p.add_argument("runs", nargs="+", help="the shard run folders")
    p.add_argument("--data", required=True, help="folder holding mmad.json (the same file the shards used)")
    p.add_argument("--out", required=True)
    p.add_argument("--images-root", default=None)
    p.add_argument("--domain-knowledge", default=None)
    p.add_argument("--mode", choices=("strict", "mmad-compatible"), default="strict")
    p.set_defaults(func=run_merge)
    return p


def run_merge(args: argparse.Namespace) -> int:
    from mmrbench.mmad.run import merge_mmad_runs
    from mmrbench.exitcodes import exit_code
    report = merge_mmad_runs(args.runs, args.out, args.data, images_root=args.images_root,
                             domain_knowledge=args.domain_knowledge, mode=args.mode)
    print(report.render())
    return exit_code(report)


def add_synth_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="write the MMAD-format miniature of a synthetic benchmark")
    p.add_argument("synth", help="folder written by `mmrbench data synth`")
    p.add_argument("--out", default=None, help="images folder to write mmad.json into (default SYNTH/images)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_synth)
    return p


def run_synth(args: argparse.Namespace) -> int:
    from mmrbench.mmad.synth import write_synth_mmad
    path = write_synth_mmad(args.synth, args.out, seed=args.seed)
    print(f"wrote {path}")
    return 0


def add_score_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("score-answers", help="re-score an answers JSON written by MMAD's query scripts")
    p.add_argument("answers")
    p.add_argument("--mode", choices=("strict", "mmad-compatible"), default="mmad-compatible")
    p.set_defaults(func=run_score)
    return p


def run_score(args: argparse.Namespace) -> int:
    from mmrbench.mmad.scoring import score_mmad_answers_file
    print(score_mmad_answers_file(args.answers, args.mode).render())
    return 0


def add_reported_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("reported", help="MMAD's published tables (Average row) with their source files")
    p.set_defaults(func=run_reported)
    return p


def run_reported(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mmrbench.mmad.data import SUBTASKS
    from mmrbench.mmad.reported import load_reported
    entries = sorted(load_reported(), key=lambda e: -e.rows["Average"]["Average"])
    rows = [[e.model + (f" ({e.note})" if e.note else ""), e.shots]
            + [f"{e.rows['Average'][s]:.1f}" for s in (*SUBTASKS, "Average")] + [e.file] for e in entries]
    print(tabulate(rows, headers=["model", "shots", *SUBTASKS, "Average", "source"], disable_numparse=True))
    return 0


SUBCOMMANDS = (add_import_parser, add_eval_parser, add_merge_parser, add_synth_parser, add_score_parser,
               add_reported_parser)


def add_parser(sub) -> None:
    """``mmrbench mmad COMMAND``: registered by :mod:`mmrbench.commands.mmad`."""
    p = sub.add_parser("mmad", help="MMAD (multiple-choice industrial AD benchmark, protocol mmad-v1)",
                       description="Import, evaluate, merge and score MMAD with the same adapters as MMR-AD.")
    msub = p.add_subparsers(dest="mmad_command", metavar="MMAD_COMMAND")
    msub.required = True
    for add in SUBCOMMANDS:
        add(msub)


def main(argv: list[str] | None = None) -> int:
    """``python -m mmrbench.mmad ...`` is ``mmrbench mmad ...`` (same errors, same exit codes)."""
    from mmrbench.cli import main as cli_main
    return cli_main(["mmad", *(sys.argv[1:] if argv is None else argv)])
