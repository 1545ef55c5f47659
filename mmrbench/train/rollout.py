"""Sampling completions from the policy and scoring completion tokens under it.

Every prompt is generated as its own batch of G identical rows, so no prompt ever needs padding
(left padding changes Qwen's 3-D rope positions of image tokens, and the group shares one prompt
anyway). Completions are cut after the first end-of-turn token and right-padded.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Sequence

import torch

from mmrbench.train.collate import repeat_inputs
from mmrbench.train.grpo_math import token_log_probs
from mmrbench.train.policy import Policy, to_device

log = logging.getLogger(__name__)

#: the reasoning body (group 1) of a think-then-answer response, and where its answer starts
_THINK_SPAN = re.compile(r"<think>(.*)</think>", re.S | re.I)
_ANSWER_SPAN = re.compile(r"<answer>", re.I)


def cut_at_eos(ids: Sequence[int], eos: set[int]) -> list[int]:
    out = []
    for t in ids:
        out.append(int(t))
        if int(t) in eos:
            break
    return out


@torch.no_grad()
def generate(policy: Policy, prompt: dict, n: int, *, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, do_sample: bool = True, min_p: float | None = None) -> list[list[int]]:
    """``n`` completions (token ids, each ending with an end-of-turn token unless truncated)."""
    was_training = policy.model.training
    policy.model.eval()
    try:
        inputs = to_device(repeat_inputs(prompt, n), policy.device, policy.dtype)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=policy.pad_id(), eos_token_id=policy.eos_ids(), use_cache=True)
        suppress = policy.multimodal_token_ids()
        if suppress:
            kwargs["suppress_tokens"] = suppress
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            if min_p:
                kwargs["min_p"] = min_p
        out = policy.model.generate(**inputs, **kwargs)
    finally:
        policy.model.train(was_training)
    plen = prompt["input_ids"].shape[1]
    eos = set(policy.eos_ids())
    return [cut_at_eos(row[plen:].tolist(), eos) for row in out]


def text_to_completion(policy: Policy, text: str, max_new_tokens: int) -> list[int]:
    """Token ids of an externally written response, ended with the end-of-turn token as the chat
    template would, at most ``max_new_tokens`` long.

    A response longer than that (a long verified reasoning as the guaranteed positive) is shortened
    in its reasoning, never in its answer: cutting the tail would drop the ``<answer>`` block, and the
    "guaranteed positive" would score 0 and teach the opposite of what it is there for. The
    ``<think>`` body is cut to fit, its tags and the whole answer are kept. Only when the answer and
    the end-of-turn token alone do not fit is the text cut at the end (with a warning).
    """
    tok = policy.tokenizer
    end = tok.eos_token_id if tok.eos_token_id is not None else policy.eos_ids()[0]

    def enc(t: str) -> list[int]:
        # split_special_tokens: a text that spells "<|image_pad|>" must not become the placeholder token
        return list(tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if t else []

    ids = enc(text) + [end]
    if len(ids) <= max_new_tokens:
        return ids
    m = _THINK_SPAN.search(text)
    if m is not None:
        head, body, tail = enc(text[:m.start(1)]), enc(m.group(1)), enc(text[m.end(1):]) + [end]
        room = max_new_tokens - len(head) - len(tail)
        if room >= 0:
            return head + body[:room] + tail
    answer = _ANSWER_SPAN.search(text)
    if answer is not None:
        kept = enc(text[answer.start():]) + [end]
        if len(kept) <= max_new_tokens:
            return kept
    log.warning("a %d-token target response does not fit max_new_tokens=%d even without its reasoning: "
                "it is cut and loses its answer", len(ids), max_new_tokens)
    return ids[:max_new_tokens]


def pad_completions(completions: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(1, max(len(c) for c in completions))
    ids = torch.full((len(completions), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(completions), T), dtype=torch.long)
    for i, c in enumerate(completions):
        if c:
            ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, :len(c)] = 1
    return ids, mask


def completion_log_probs(policy: Policy, prompt: dict, ids: torch.Tensor, mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probs ``(rows, T)`` of completions ``ids`` after one shared prompt.

    Builds prompt+completion rows (the multimodal inputs repeated per row; completion tokens are
    text, so their ``mm_token_type_ids`` are 0) and keeps logits only for the completion positions
    (``logits_to_keep``), which on a 150k vocabulary is most of the memory.
    """
    n, T = ids.shape
    rep = repeat_inputs(prompt, n)
    rep["input_ids"] = torch.cat([rep["input_ids"], ids], dim=1)
    rep["attention_mask"] = torch.cat([rep["attention_mask"], mask], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in rep:
            rep[key] = torch.cat([rep[key], torch.zeros_like(ids)], dim=1)
    rep = to_device(rep, policy.device, policy.dtype)
    out = policy.model(**rep, use_cache=False, logits_to_keep=T + 1)
    logits = out.logits[:, -(T + 1):-1, :]
    return token_log_probs(logits, ids.to(policy.device), temperature)
