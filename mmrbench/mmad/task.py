"""The MMAD task as a runner drives it: select the requests, build each one, score the answers.

The unit the runner sends (and ``predictions.jsonl`` has one line for) is a :class:`MMADQuery`: one
request about one image covering one or more of its questions (``ad-first``: the detection question
alone, then the rest as one list). Scoring spreads each answer back over its questions, whose ids are
``"<image>#<k>"``. A query id is ``"<image>#<k>"`` for a single question and ``"<image>#<k>,<j>,..."``
for a list, so ids stay stable across runs with the same settings.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mmrbench.adapters.base import GenerationConfig, Message, Request, TextPart
from mmrbench.errors import ConfigError
from mmrbench.mmad.answers import parse_letters
from mmrbench.mmad.data import MMADData, MMADImage, MMADQuestion
from mmrbench.mmad.prompts import (ASK_MODES, PROTOCOL, SOURCE, TEMPLATE_KINDS, DomainKnowledge,
                                   group_questions, prompt_text, templates_for)
from mmrbench.mmad.scoring import AnswerRecord, MMADReport, score_records
from mmrbench.predictions import Prediction


@dataclass(frozen=True)
class MMADQuery:
    id: str
    image: MMADImage
    questions: tuple[MMADQuestion, ...]
    templates: tuple[str, ...]


def query_id(image: MMADImage, qs: Sequence[MMADQuestion]) -> str:
    return f"{image.key}#" + ",".join(str(q.index) for q in qs)


class MMADTask:
    """Settings of one ``mmad-v1`` evaluation over a loaded release."""

    protocol = PROTOCOL

    def __init__(self, data: MMADData, *, shots: int = 1, templates: str = "random", ask: str = "ad-first",
                 knowledge: DomainKnowledge | None = None, mode: str = "strict"):
        if ask not in ASK_MODES:
            raise ConfigError(f"unknown ask mode '{ask}' (known: {', '.join(ASK_MODES)})")
        if templates not in TEMPLATE_KINDS:
            raise ConfigError(f"unknown template kind '{templates}' (known: {', '.join(TEMPLATE_KINDS)})")
        if shots < 0:
            raise ConfigError(f"shots must be >= 0, got {shots}")
        self.data, self.shots, self.templates, self.ask = data, shots, templates, ask
        self.knowledge, self.mode = knowledge, mode

    def protocol_json(self) -> dict[str, Any]:
        return {"name": PROTOCOL, "shots": self.shots, "templates": self.templates, "ask": self.ask,
                "domain_knowledge": self.knowledge is not None, "scoring_mode": self.mode, "prompt_source": SOURCE}

    def select(self, *, datasets: Sequence[str] | None = None, categories: Sequence[str] | None = None,
               limit: int | None = None, shard: tuple[int, int] | None = None) -> list[MMADQuery]:
        """Queries in file order; ``limit`` counts images; ``shard=(i, n)`` keeps images whose path
        hashes to i (so an image's questions never straddle shards)."""
        out: list[MMADQuery] = []
        n_images = 0
        for im in self.data.images:
            if datasets and im.dataset not in datasets:
                continue
            if categories and im.category not in categories:
                continue
            if shard and zlib.crc32(im.key.encode()) % shard[1] != shard[0]:
                continue
            if limit is not None and n_images >= limit:
                break
            n_images += 1
            tmpl = templates_for(im, self.shots, self.templates)
            out.extend(MMADQuery(query_id(im, qs), im, qs, tmpl) for qs in group_questions(im, self.ask))
        return out

    def build_request(self, query: MMADQuery, config: GenerationConfig | None = None, *,
                      decode: bool = True) -> Request:
        """Templates, then the query image, then the text (images load here, in the sending worker).

        ``decode=False`` (remote providers, which send the files' own bytes): no pixel is decoded,
        the size comes from the header, and the templates, which many queries share, are marked
        ``shared`` so a provider encodes each once."""
        from mmrbench.vision.images import load_rgb
        from mmrbench.requests_build import FileImagePart, header_size

        root = self.data.root
        parts: list = []
        for i, rel in enumerate((*query.templates, query.image.key)):
            path = root / rel
            if decode:
                parts.append(FileImagePart(load_rgb(path, sample_id=query.id), path=rel, file=str(path)))
            else:
                parts.append(FileImagePart(None, path=rel, file=str(path), size=header_size(path, sample_id=query.id),
                                           shared=i < len(query.templates), sample_id=query.id))
        knowledge = self.knowledge.for_image(query.image.dataset, query.image.category) if self.knowledge else None
        parts.append(TextPart(prompt_text(query.questions, shots=len(query.templates), knowledge=knowledge)))
        return Request(query.id, [Message("user", parts)], config or GenerationConfig())

    def records(self, queries: Sequence[MMADQuery], predictions: Mapping[str, Prediction]) -> list[AnswerRecord]:
        out = []
        for qu in queries:
            pred = predictions.get(qu.id)
            if pred is None or pred.status in ("error", "refused") or pred.response is None:
                reason = "missing" if pred is None else "error"
                letters: list[str | None] = [None] * len(qu.questions)
            else:
                reason = "unparseable"
                letters = parse_letters(pred.response, [q.letters for q in qu.questions])
            for q, letter in zip(qu.questions, letters):
                out.append(AnswerRecord(dataset=q.dataset, type=q.type, is_normal=q.is_normal, correct=q.answer,
                                        given=letter, reason=None if letter is not None else reason))
        return out

    def score(self, queries: Sequence[MMADQuery], predictions: Mapping[str, Prediction],
              mode: str | None = None) -> MMADReport:
        return score_records(self.records(queries, predictions), mode or self.mode)
