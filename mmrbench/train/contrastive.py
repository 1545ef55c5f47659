"""Contrastive sampling of Anomaly-R1 (paper Sec. 4): keep every group informative.

* Guaranteed positive: one response of every group is the sample's verified think-then-answer text
  (the SFT target: ``reasoning`` with its answer rewritten in the policy's frame, or the templated
  one when a sample has none). It is scored under the policy like any rollout (off-policy data,
  ratio starts at 1 because old log-probs are taken from the same policy).
* Negatives: when every response of a group is *positive* (its Yes/No is right), the group has
  little or no advantage signal, so ``n_negatives`` policy rollouts are replaced by responses
  written under an *opposite hint* ("this sample is abnormal" for a normal one). Sources, first
  available wins: precomputed ``negatives`` of the manifest sample (texts, as the textgen step
  writes them); an external MLLM (any :class:`~mmrbench.adapters.base.ModelAPI`, e.g.
  ``openai:gpt-4o``); the policy itself prompted with the opposite hint.

Box frames: an opposite-hint response to a normal sample says Yes with invented boxes and to an
anomalous one says No, and neither case is touched by the box penalty (normal samples have no
ground-truth boxes; a No has no predicted boxes), so an external model's own coordinate convention
cannot distort the reward.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from mmrbench.adapters.base import GenerationConfig, Request
from mmrbench.train.data import Example, ExampleBuilder
from mmrbench.train.policy import Policy

log = logging.getLogger(__name__)


def precomputed_negatives(example: Example) -> list[str]:
    raw = example.sample.extra.get("negatives") or []
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            text = item.get("text") or item.get("response")
            if isinstance(text, str):
                out.append(text)
    return out


def all_positive(accuracy: Sequence[float]) -> bool:
    return len(accuracy) > 0 and all(a >= 1.0 for a in accuracy)


class NegativeSource:
    """Produces opposite-hint negatives for one example, as completion token ids."""

    def __init__(self, policy: Policy, builder: ExampleBuilder, *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, api: Any | None = None):
        self.policy = policy
        self.builder = builder
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.api = api

    def __call__(self, example: Example, n: int) -> tuple[list[list[int]], str]:
        from mmrbench.train.rollout import text_to_completion

        pre = precomputed_negatives(example)
        if pre:
            return [text_to_completion(self.policy, t, self.max_new_tokens) for t in pre[:n]], "manifest"
        messages = self.builder.messages(example.sample, opposite_hint=True)
        if self.api is not None:
            cfg = GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)
            reqs = [Request(id=f"{example.sample.id}#neg{i}", messages=messages, config=cfg) for i in range(n)]
            resps = self.api.generate(reqs)
            texts = [r.text for r in resps if r.status == "ok" and r.text]
            if len(texts) < n:
                log.warning("negatives model answered %d of %d requests for %s; the policy fills in",
                            len(texts), n, example.sample.id)
            out = [text_to_completion(self.policy, t, self.max_new_tokens) for t in texts]
            if len(out) >= n:
                return out[:n], "api"
            return out + self._from_policy(messages, n - len(out)), "api+policy"
        return self._from_policy(messages, n), "policy"

    def _from_policy(self, messages, n: int) -> list[list[int]]:
        from mmrbench.train.collate import prompt_inputs
        from mmrbench.train.rollout import generate

        prompt = prompt_inputs(self.policy.processor, messages)
        return generate(self.policy, prompt, n, max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature, top_p=self.top_p)
