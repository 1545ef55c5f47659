"""Tokens and money for MMAD runs: ``mmrbench mmad eval --dry-run`` and ``--max-cost``.

The same rules as :mod:`mmrbench.cost` (image tokens by each provider's documented rule, text at 4
characters per token, output at the ``max_new_tokens`` bound, the card's published prices), applied to
an MMAD request: its normal templates, the query image, and the question text.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mmrbench.cost import card_prices, estimate_report, image_rule, image_tokens, text_tokens
from mmrbench.errors import ConfigError
from mmrbench.mmad.prompts import prompt_text
from mmrbench.mmad.task import MMADQuery, MMADTask


def prompt_tokens(card: Any, task: MMADTask, query: MMADQuery, sizes: dict | None = None) -> tuple[int, int]:
    """``(prompt tokens, of which image tokens)`` of one query's request, without decoding an image
    (sizes from the headers, cached per file in ``sizes``)."""
    from mmrbench.requests_build import header_size

    img = 0
    for rel in (*query.templates, query.image.key):
        size = sizes.get(rel) if sizes is not None else None
        if size is None:
            size = header_size(task.data.root / rel, sample_id=query.id)
            if sizes is not None:
                sizes[rel] = size
        img += image_tokens(card, size)
    knowledge = task.knowledge.for_image(query.image.dataset, query.image.category) if task.knowledge else None
    text = prompt_text(query.questions, shots=len(query.templates), knowledge=knowledge)
    return img + text_tokens(text), img


def dry_run_mmad(card: Any, task: MMADTask, queries: Sequence[MMADQuery], out: str | os.PathLike,
                 max_cost: float | None = None) -> str:
    """What ``evaluate_mmad`` would ask and cost: queries already answered in ``out`` (not as errors)
    are left out, as a resume skips them. Sends and writes nothing; returns the report as text."""
    from mmrbench.predictions import load_latest

    if getattr(card, "provider", None) == "detector":
        raise ConfigError("--dry-run estimates tokens of language models; the classical detectors spend none")
    pred_path = Path(out) / "predictions.jsonl"
    existing = load_latest(pred_path) if pred_path.is_file() else {}
    todo = [q for q in queries if q.id not in existing or existing[q.id].status == "error"]
    sizes: dict = {}
    total = imgs = 0
    for q in todo:
        t, i = prompt_tokens(card, task, q, sizes)
        total += t
        imgs += i
    return estimate_report(f"{card.title} on {task.data.json_path.name} (mmad-v1)", len(queries), len(todo), "requests",
                           total, imgs, image_rule(card), int(card.generation_config().max_new_tokens),
                           card_prices(card), max_cost)
