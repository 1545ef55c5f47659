"""Reasoning-text generation and verification (paper Sec. 3.2, App. C).

A strong MLLM sees the ground truth as a hint (red boxes on the query image, coordinates and labels
in the prompt) and writes think-then-answer text; a text is kept only when its answer agrees with
the ground truth and it never mentions the hint. Kept texts go to the manifest's ``reasoning`` field
in original-image pixels; opposite-hint negatives go to ``negatives`` for GRPO's contrastive sampling.

Modules: :mod:`~mmrbench.textgen.hints` (red boxes, hint coordinates), :mod:`~mmrbench.textgen.verify`
(the consistency check, frame-neutral storage), :mod:`~mmrbench.textgen.similarity` (label
similarity with the shipped all-MiniLM-L6-v2), :mod:`~mmrbench.textgen.leak`,
:mod:`~mmrbench.textgen.negatives`, :mod:`~mmrbench.textgen.generate` (the resumable pipeline),
:mod:`~mmrbench.textgen.report`.
"""
from __future__ import annotations

from mmrbench.textgen.leak import find_leaks, leaks_hint
from mmrbench.textgen.verify import reexpress, verify_negative, verify_text

__all__ = ["find_leaks", "leaks_hint", "verify_text", "verify_negative", "reexpress"]
