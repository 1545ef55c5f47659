"""Opposite-hint negatives for GRPO's contrastive sampling (paper Sec. 4, DESIGN.md).

When every response of a GRPO group is correct the advantages vanish; the trainer then swaps in
negatives: texts written by a strong MLLM that was told the *wrong* verdict ("this sample is
abnormal" for a normal one, "normal" for an anomalous one) and shown no boxes. They read like real
reasoning and reach the wrong answer, so the group's contrast comes back. A negative is kept only
if it is indeed wrong (its decision contradicts the label) and never mentions the hint
(:func:`mmrbench.textgen.verify.verify_negative`).

Several negatives of one sample must differ, so each is sampled (temperature 1.0 by default) with
its own seed.
"""
from __future__ import annotations

import dataclasses

from mmrbench.adapters.base import GenerationConfig

SEP = "#neg"


def negative_id(sample_id: str, k: int) -> str:
    """Request id of the k-th negative of a sample (raw file key)."""
    return f"{sample_id}{SEP}{k}"


def split_negative_id(rid: str) -> tuple[str, int] | None:
    """(sample id, k) of a negative's request id, or None for a positive's id."""
    head, sep, tail = rid.rpartition(SEP)
    if not sep or not tail.isdigit():
        return None
    return head, int(tail)


def negative_config(base: GenerationConfig, k: int, temperature: float = 1.0) -> GenerationConfig:
    """Sampling settings of the k-th negative: the base budget, sampled, a distinct seed per k."""
    seed = (base.seed or 0) * 1000 + k + 1
    return dataclasses.replace(base, temperature=temperature, seed=seed)
