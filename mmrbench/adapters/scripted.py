"""``scripted`` provider: replays fixed answers from a JSONL file.

Each line is ``{"id": ..., "response": ...}`` (optionally ``"status"``, ``"error"``). Used by tests and
offline: re-running the harness over answers collected elsewhere (a notebook, another harness)
gives them the same result.json, provenance and scoring as a live run. The image sizes reported are
the sizes of the images in the request, so ``pixel`` answers are read in the original frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mmrbench.adapters.base import ModelAPI, Request, Response
from mmrbench.errors import ConfigError
from mmrbench.validation import loads_json

_STATUSES = ("ok", "refused", "truncated", "error")


def load_script(path: str | Path) -> dict[str, dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"scripted answers file not found: {p}")
    out: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(p.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        d = loads_json(line, f"{p}:{i}")  # bad UTF-8, NaN or deep nesting: one line naming the line
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            raise ConfigError(f"{p}:{i}: expected an object with a string 'id'")
        resp = d.get("response")
        if resp is not None and not isinstance(resp, str):
            raise ConfigError(f"{p}:{i}: 'response' must be a string or null")
        if d.get("status", "ok") not in _STATUSES:
            raise ConfigError(f"{p}:{i}: 'status' must be one of {', '.join(_STATUSES)}")
        out[d["id"]] = d
    return out


class ScriptedModel(ModelAPI):
    provider = "scripted"
    convention = "pixel"
    max_concurrency = 1
    batch_size = 8

    def __init__(self, model: str, *, convention: str | None = None, **_ignored: Any):
        super().__init__(model)
        self.answers = load_script(model)
        if convention:
            self.set_convention(convention)

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        out = []
        for r in requests:
            sizes = [[im.width, im.height] for im in r.images]
            d = self.answers.get(r.id)
            if d is None:
                out.append(Response(None, "error", f"no scripted answer for id '{r.id}'", image_sizes=sizes))
                continue
            out.append(Response(d.get("response"), d.get("status", "ok"), d.get("error"),
                                latency_s=0.0, image_sizes=sizes))
        return out
