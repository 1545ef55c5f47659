"""Writing the board: the chosen formats (Markdown, the static page, CSV, JSON), each replaced atomically.

Kept apart from :mod:`mmrbench.leaderboard.board` (which collects and verifies entries) so that the
renderers can import the board's types without the board importing them back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.board import DEFAULT_SAMPLES_PER_RUN, Board, build_board
from mmrbench.leaderboard.export import render_csv, render_json
from mmrbench.leaderboard.render_html import render_html
from mmrbench.leaderboard.render_md import render_markdown
from mmrbench.rundir import atomic_write_bytes


FORMATS = ("md", "html", "csv", "json")
FILE_NAMES = {"md": "LEADERBOARD.md", "html": "index.html", "csv": "leaderboard.csv", "json": "leaderboard.json"}


def parse_formats(text: str) -> list[str]:
    """``"md,html"`` -> ["md", "html"]; an unknown or empty list is a one-line error."""
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise MMRBenchError(f"--format {text!r}: unknown format {', '.join(bad) or '(none)'}; "
                            f"choose from {','.join(FORMATS)}")
    return list(dict.fromkeys(fmts))


def write_leaderboard(results_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      manifest_stores: Iterable[str | os.PathLike] = (), resamples: int = 1000, seed: int = 0,
                      samples_per_run: int = DEFAULT_SAMPLES_PER_RUN, generated: str | None = None,
                      formats: Iterable[str] = ("md", "html")) -> Board:
    """Build the board and write the chosen formats (``LEADERBOARD.md``, ``index.html``,
    ``leaderboard.csv``, ``leaderboard.json``) atomically into ``out_dir``."""
    formats = list(formats)
    board = build_board(results_dir, manifest_stores=manifest_stores, resamples=resamples, seed=seed,
                        samples_per_run=samples_per_run)
    renderers = {"md": render_markdown, "html": lambda b: render_html(b, generated=generated),
                 "csv": render_csv, "json": render_json}
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MMRBenchError(f"--out {out} is an existing file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        name = FILE_NAMES[fmt]
        text = renderers[fmt](board)
        atomic_write_bytes(out / name, (text if text.endswith("\n") else text + "\n").encode("utf-8"), fsync=False)
    return board
