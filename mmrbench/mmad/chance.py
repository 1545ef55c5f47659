"""``chance`` provider: the chance level of a multiple-choice benchmark, as a provider.

It is **not a model**. For every question in a request it picks one of that question's option letters
uniformly at random and answers ``Answer: X`` (one question) or ``k. Answer: X`` lines (a list), the
form :mod:`mmrbench.mmad.answers` reads first. The options are read from the request text exactly as
``mmad-v1`` writes them (``Question: ...`` followed by ``A. ...`` lines), so the provider sees what a
model sees and nothing else (no answer key). The choice depends only on the seed (the model id, e.g.
``chance:seed-0``) and the request id, so a run is reproducible whatever the order or concurrency.

Why it exists: no offline model answers multiple-choice questions, and a board needs a floor to read
the other rows against (MMAD's Anomaly Detection chance is 50, a four-option question's 25). The board
lists it under "Chance level (not a model)".
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Any, Sequence

from mmrbench.adapters.base import ModelAPI, Request, Response

_QUESTION = re.compile(r"(?m)^Question: ")
_OPTION = re.compile(r"(?m)^([A-E])\. ")


def option_letters(text: str) -> list[list[str]]:
    """The option letters of every question in a ``mmad-v1`` request text, in order."""
    starts = [m.start() for m in _QUESTION.finditer(text)]
    blocks = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    return [[m.group(1) for m in _OPTION.finditer(block)] for block in blocks]


class ChanceModel(ModelAPI):
    provider = "chance"
    convention = "pixel"
    max_concurrency = 1
    batch_size = 64

    def __init__(self, model: str, **_ignored: Any):
        super().__init__(model)

    def _rng(self, request_id: str) -> random.Random:
        digest = hashlib.sha256(f"{self.model}\x00{request_id}".encode("utf-8")).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def answer(self, request: Request) -> str | None:
        letters = option_letters("".join(m.text for m in request.messages))
        if not letters or not all(letters):
            return None
        rng = self._rng(request.id)
        picks = [rng.choice(opts) for opts in letters]
        if len(picks) == 1:
            return f"Answer: {picks[0]}"
        return "\n".join(f"{k}. Answer: {x}" for k, x in enumerate(picks, start=1))

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for r in requests:
            sizes = [[im.width, im.height] for im in r.images]
            text = self.answer(r)
            if text is None:
                out.append(Response(None, "error", "no multiple-choice options found in the request", image_sizes=sizes))
            else:
                out.append(Response(text, "ok", latency_s=0.0, image_sizes=sizes))
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chance_level": True}
