"""``mmrbench bundled``: the main job, offline, in one command.

Generates the bundled synthetic benchmark (or reuses it when seed and scale match), evaluates the
offline models (PatchCore, PaDiM and the reference entry Anomaly-R1-mini) on its held-out subdatasets,
stores every run as a verified leaderboard entry, and writes the leaderboard: the runs on the bundled
benchmark's own board, the paper's reported rows on theirs. It also writes the MMAD-format miniature of
the benchmark and evaluates the seeded chance level on it (protocol ``mmad-v1``; no offline model answers
multiple-choice questions), so the MMAD boards (MMAD's published rows, the miniature) are there offline
too. Needs no key and no download.
API models only join when asked with ``--api`` (and their key is set), so the quick start never
spends money behind a user's back.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: a default model whose provider's extra is not installed (anomaly-r1-mini needs ``hf``) is left out
#: with a note; one asked for by name with --models fails as usual
DEFAULT_MODELS = "patchcore,padim,anomaly-r1-mini"
DEFAULT_MMAD_MODELS = "chance"


def add_parser(sub) -> None:
    p = sub.add_parser("bundled", help="run the offline main job on the bundled synthetic benchmark",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--out", default="runs/bundled", help="working folder (data, runs, results, leaderboard)")
    p.add_argument("--seed", type=int, default=0, help="synthetic benchmark seed")
    p.add_argument("--scale", choices=("small", "default"), default="default", help="synthetic benchmark size")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated offline model specs (default: {DEFAULT_MODELS}); e.g. add hf:PATH")
    p.add_argument("--api", action="store_true",
                   help="also evaluate every API model card whose key is set in the environment")
    p.add_argument("--limit", type=int, default=None, help="first N test samples per model (quick look)")
    p.add_argument("--mmad-models", default=DEFAULT_MMAD_MODELS,
                   help="comma-separated model specs evaluated on the MMAD-format miniature (protocol mmad-v1); "
                        "'chance' = the seeded chance level (not a model); empty to skip "
                        f"(default: {DEFAULT_MMAD_MODELS})")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def ensure_benchmark(data_dir: Path, seed: int, scale: str, progress: bool) -> Path:
    """Generate the benchmark unless ``data_dir`` already holds it for this seed and scale; either way, warn
    when it is not the reference benchmark (drawn by another OpenCV: :func:`mmrbench.data.synth.reference_mismatch`)."""
    from mmrbench.data.manifest import file_sha256
    from mmrbench.data.synth import generate, reference_mismatch

    manifest, info_path = data_dir / "manifest.jsonl", data_dir / "info.json"
    info: dict = {}
    if manifest.exists() and info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError:
            info = {}
    if (info.get("seed") == seed and info.get("scale") == scale
            and info.get("manifest_sha256") == file_sha256(manifest)):
        print(f"bundled benchmark: reusing {manifest}")
    else:
        print(f"bundled benchmark: generating into {data_dir} (seed {seed}, scale {scale})")
        generate(data_dir, seed=seed, scale=scale, force=True, progress=progress)
        info = json.loads(info_path.read_text())
    why = reference_mismatch(info)
    if why:
        print(f"bundled benchmark: warning: {why}", file=sys.stderr)
    return manifest


def api_specs() -> list[str]:
    """Cards of API providers whose key is set (the key itself is never read here)."""
    from mmrbench.cards import list_cards

    out = []
    for card in list_cards():
        env = getattr(card, "api_key_env", None)
        if card.provider in ("openai", "gemini") and env and os.environ.get(env):
            out.append(card.name)
    return out


def held_out_subdatasets(data_dir: Path) -> list[str] | None:
    try:
        return json.loads((data_dir / "info.json").read_text()).get("held_out") or None
    except (OSError, json.JSONDecodeError):
        return None


def chance_card():
    """The chance level as a model card: a seeded uniform option letter per question (not a model)."""
    from mmrbench.cards import ModelCard
    return ModelCard(name="chance-level", provider="chance", model_id="seed-0",
                     display_name="Chance level (uniform option letter, seed 0)", convention="pixel",
                     convention_source="no boxes (multiple-choice letters only)",
                     notes="not a model: picks one of each question's option letters uniformly at random")


def mmad_cards(text: str) -> list:
    from mmrbench.cards import parse_spec
    return [chance_card() if s.strip() == "chance" else parse_spec(s.strip()) for s in text.split(",") if s.strip()]


def run_mmad(out: Path, data_dir: Path, results_dir: Path, cards: list, *, limit: int | None, progress: bool,
             failures: list[str]) -> None:
    """The MMAD part: write the miniature (deterministic), evaluate each card on it, submit the runs."""
    from mmrbench.errors import MMRBenchError
    from mmrbench.leaderboard.reference import slugify
    from mmrbench.leaderboard.submit import submit_run
    from mmrbench.mmad.run import evaluate_mmad
    from mmrbench.mmad.synth import write_synth_mmad

    mmad_json = write_synth_mmad(data_dir)
    print(f"\nMMAD-format miniature: {mmad_json}")
    for card in cards:
        run_dir = out / "runs" / f"mmad-{slugify(card.name)}"
        print(f"== {card.title} ({card.provider}) on the MMAD-format miniature (mmad-v1, 1-shot, strict)")
        try:
            evaluate_mmad(card, mmad_json, run_dir, limit=limit, quiet=not progress)
            submit_run(run_dir, results_dir=results_dir, manifest=mmad_json, replace=True)
        except MMRBenchError as exc:
            failures.append(f"{card.name} (MMAD): {exc}")
            print(f"mmrbench: {card.name} failed on MMAD: {exc}")


def run(args: argparse.Namespace) -> int:
    from mmrbench.cards import create_model, parse_spec
    from mmrbench.errors import MissingExtraError, MMRBenchError
    from mmrbench.leaderboard.write import write_leaderboard
    from mmrbench.leaderboard.reference import slugify, write_reference_entries
    from mmrbench.leaderboard.submit import submit_run
    from mmrbench.runner import EvalOptions, run_eval

    out = Path(args.out)
    progress = not args.no_progress
    data_dir = out / "data"
    manifest = ensure_benchmark(data_dir, args.seed, args.scale, progress)
    subdatasets = held_out_subdatasets(data_dir)

    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    defaults = args.models == DEFAULT_MODELS
    if args.api:
        joined = api_specs()
        print("API models joining: " + (", ".join(joined) if joined else "none (no key set)"))
        specs += joined

    results_dir = out / "results"
    write_reference_entries(results_dir)
    failures: list[str] = []
    cards = [parse_spec(spec) for spec in specs]  # a typo fails here, before any model has run
    m_cards = mmad_cards(args.mmad_models)
    from mmrbench.leaderboard.mmad import write_mmad_reported_entries
    write_mmad_reported_entries(results_dir)
    for card in cards:
        run_dir = out / "runs" / slugify(card.name)
        print(f"\n== {card.name} ({card.provider}) on {', '.join(subdatasets or ['all subdatasets'])}")
        try:
            # created here, not in run_eval: a missing extra is known before the run folder exists
            model = None if card.provider == "detector" else create_model(card)
            run_eval(card, manifest, run_dir, EvalOptions(split="test", subdatasets=subdatasets, limit=args.limit,
                                                          progress=progress, command=["mmrbench", "bundled"]),
                     model=model)
            submit_run(run_dir, results_dir=results_dir, manifest=manifest, replace=True)
        except MissingExtraError as exc:
            if not defaults:
                failures.append(f"{card.name}: {exc}")
            print(f"{card.name}: {'left out' if defaults else 'failed'}: {exc}")
        except MMRBenchError as exc:  # one broken model must not cost the others' results
            failures.append(f"{card.name}: {exc}")
            print(f"mmrbench: {card.name} failed: {exc}")

    if m_cards:
        run_mmad(out, data_dir, results_dir, m_cards, limit=args.limit, progress=progress, failures=failures)
    board_dir = out / "leaderboard"
    write_leaderboard(results_dir, board_dir, manifest_stores=[data_dir], resamples=args.resamples)
    print("\n" + (board_dir / "LEADERBOARD.md").read_text(encoding="utf-8"))
    print(f"leaderboard: {board_dir / 'LEADERBOARD.md'} and {board_dir / 'index.html'}")
    print(f"runs:        {out / 'runs'}")
    if failures:
        raise MMRBenchError("some models failed: " + "; ".join(failures))
    return 0
