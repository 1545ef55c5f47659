"""Tokens and money: estimates before a run (``--dry-run``), the spend of a run (``--max-cost``,
result.json).

Prices come from the model card (``price_input_per_mtok`` / ``price_output_per_mtok``: US dollars per
million tokens, as the provider publishes them). Spend is computed from the token usage each answer
reports; an answer without usage is charged its dry-run estimate (prompt estimated, output at the
``max_new_tokens`` bound), so a budget is never under-counted.

Image tokens follow each provider's documented rule:

- OpenAI (GPT-4o family, ``detail`` high/auto): fit within 2048 x 2048, then scale the shortest side
  down to 768; count 512-px tiles; tokens = base + per_tile x tiles (85 + 170 x tiles for GPT-4o,
  2833 + 5667 x tiles for GPT-4o mini); ``detail = "low"``: the base only.
- Gemini (2.0 and later): an image with both sides <= 384 px is 258 tokens; a larger one is cut into
  768 x 768 tiles of 258 tokens each.
- Qwen-VL (local engines, and Qwen models behind an API): the image is resized to multiples of 28
  within [min_pixels, max_pixels] and each 28 x 28 patch is one token, plus the two vision
  start/end tokens.

Text is estimated at 4 characters per token (no tokenizer is loaded for an estimate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mmrbench.errors import MMRBenchError

if TYPE_CHECKING:  # annotations only
    from mmrbench.cards import ModelCard
    from mmrbench.data.schema import Sample
    from mmrbench.predictions import Prediction

#: Qwen2.5-VL processor defaults (transformers' Qwen2VLImageProcessor)
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384
CHARS_PER_TOKEN = 4


def openai_image_tokens(width: int, height: int, model: str = "", detail: str | None = None) -> int:
    base, per_tile = (2833, 5667) if "mini" in model.lower() and "4o" in model.lower() else (85, 170)
    if detail == "low":
        return base
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return base + per_tile * tiles


def gemini_image_tokens(width: int, height: int) -> int:
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def qwen_image_tokens(width: int, height: int, min_pixels: int = QWEN_MIN_PIXELS,
                      max_pixels: int = QWEN_MAX_PIXELS, factor: int = 28) -> int:
    from mmrbench.adapters.image_encoding import smart_resize
    w, h = smart_resize(width, height, factor, min_pixels, max_pixels)
    return (w // factor) * (h // factor) + 2


def image_rule(card: Any) -> str:
    """Which documented rule counts this card's image tokens: openai, gemini or qwen."""
    low = card.model_id.lower()
    if card.provider == "gemini":
        return "gemini"
    if card.provider == "openai" and not any(k in low for k in ("qwen", "qvq")):
        return "openai"
    return "qwen"


def image_tokens(card: Any, size: tuple[int, int]) -> int:
    """Tokens of one image of ``size`` (as on disk) for this card, after the card's own resize."""
    from mmrbench.adapters.image_encoding import ImagePrep, target_size
    img = {k: v for k, v in (card.image or {}).items() if k != "detail"}
    w, h = target_size(size, ImagePrep(**img)) if img else size
    rule = image_rule(card)
    if rule == "openai":
        return openai_image_tokens(w, h, card.model_id, (card.image or {}).get("detail"))
    if rule == "gemini":
        return gemini_image_tokens(w, h)
    return qwen_image_tokens(w, h, int(img.get("min_pixels") or QWEN_MIN_PIXELS),
                             int(img.get("max_pixels") or QWEN_MAX_PIXELS), int(img.get("factor") or 28))


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class Prices:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6

    def to_json(self) -> dict[str, float]:
        return {"input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok}


def card_prices(card: Any) -> Prices | None:
    pi, po = getattr(card, "price_input_per_mtok", None), getattr(card, "price_output_per_mtok", None)
    if pi is None or po is None:
        return None
    return Prices(float(pi), float(po))


@dataclass
class Estimate:
    n_requests: int
    input_tokens: int
    image_tokens: int
    output_tokens_max: int
    rule: str

    def cost(self, prices: Prices | None) -> float | None:
        return prices.cost(self.input_tokens, self.output_tokens_max) if prices else None


def estimate_sample(card: Any, sample: Any, root: Any, variant: str = "default",
                    domain_labels: Any = None, sizes: dict | None = None) -> tuple[int, int]:
    """``(prompt tokens, of which image tokens)`` of one sample's request, estimated without
    decoding an image (sizes from the headers, cached per file in ``sizes``)."""
    from pathlib import Path

    from mmrbench.prompts import build_prompt
    from mmrbench.requests_build import header_size

    labels = None
    if variant == "domain_knowledge":
        labels = (domain_labels or {}).get((sample.subdataset, sample.category), [])
    prompt = build_prompt(sample, variant, domain_labels=labels)
    img = 0
    for rel in prompt.images:
        if rel == sample.image:
            size = (sample.width, sample.height)
        else:
            key = str(rel)
            if sizes is not None and key in sizes:
                size = sizes[key]
            else:
                size = header_size(Path(root) / rel, sample_id=sample.id)
                if sizes is not None:
                    sizes[key] = size
        img += image_tokens(card, size)
    return text_tokens(prompt.system) + text_tokens(prompt.user) + img, img


def estimate(card: Any, samples: Sequence[Any], root: Any, variant: str = "default",
             domain_labels: Any = None) -> Estimate:
    max_new = int(card.generation_config().max_new_tokens)
    sizes: dict = {}
    total = imgs = 0
    for s in samples:
        t, i = estimate_sample(card, s, root, variant, domain_labels, sizes)
        total += t
        imgs += i
    return Estimate(len(samples), total, imgs, max_new * len(samples), image_rule(card))


def usage_totals(preds: Any) -> dict[str, int]:
    """Token usage summed over predictions (the latest line per sample)."""
    p = c = n = 0
    for pr in preds:
        u = getattr(pr, "usage", None)
        if isinstance(u, dict):
            p += int(u.get("prompt_tokens") or 0)
            c += int(u.get("completion_tokens") or 0)
            n += 1
    return {"prompt_tokens": p, "completion_tokens": c, "n_with_usage": n}


class Spend:
    """The run folder's estimated spend, kept as answers arrive (for --max-cost and run.json).

    An answer with token usage costs what it reports; one without is charged ``estimate_prompt(id)``
    tokens of input plus the ``max_new_tokens`` bound (never under-counted). The MMR-AD runner
    estimates a sample's prompt with :func:`estimate_sample`; MMAD passes its own estimator."""

    def __init__(self, card: ModelCard, root: Path | None = None, variant: str = "default", domain: Any = None,
                 samples: Sequence[Sample] = (), estimate_prompt: Callable[[str], int | None] | None = None):
        self.prices = card_prices(card)
        self.card, self.root, self.variant, self.domain = card, root, variant, domain
        self.by_id = {s.id: s for s in samples}
        self.max_new = int(card.generation_config().max_new_tokens)
        self.usd = 0.0
        self.usd_this_run = 0.0
        self.n = 0
        self.prior = 0.0  # the projected cost of one answer before any arrived (the dry-run bound)
        self._sizes: dict = {}
        self._estimate_prompt = estimate_prompt

    def prompt_tokens(self, sample_id: str) -> int | None:
        """Estimated prompt tokens of one request, None when unknown (an unreadable image)."""
        try:
            if self._estimate_prompt is not None:
                return self._estimate_prompt(sample_id)
            if sample_id not in self.by_id:
                return None
            return estimate_sample(self.card, self.by_id[sample_id], self.root, self.variant, self.domain,
                                   self._sizes)[0]
        except MMRBenchError:  # an unreadable image: its cost is not estimated
            return None

    def prime(self, first_id: str) -> None:
        """Set :attr:`prior` from the request about to go first: what an in-flight request is expected
        to cost before this run has answered any."""
        if self.prices is not None:
            prompt = self.prompt_tokens(first_id)
            if prompt is not None:
                self.prior = self.prices.cost(prompt, self.max_new)

    def of(self, pred: Prediction) -> float:
        if self.prices is None:
            return 0.0
        u = pred.usage if isinstance(pred.usage, dict) else None
        if u is not None:
            return self.prices.cost(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
        if pred.status == "error":
            return 0.0  # a failed request without usage was not billed
        prompt = self.prompt_tokens(pred.id)
        return 0.0 if prompt is None else self.prices.cost(prompt, self.max_new)

    def add(self, pred: Prediction, this_run: bool = True) -> None:
        c = self.of(pred)
        self.usd += c
        if this_run:
            self.usd_this_run += c
            self.n += 1

    def replace(self, old: Prediction | None, new: Prediction) -> None:
        """``new`` supersedes ``old`` for the same id (the latest line wins, as a resume counts it)."""
        if old is not None:
            self.usd -= self.of(old)
        self.add(new)

    def mean(self) -> float:
        return self.usd_this_run / self.n if self.n else self.prior


def estimate_report(title: str, n_selected: int, n_todo: int, unit: str, input_tokens: int, image_tokens: int,
                    rule: str, max_new: int, prices: Prices | None, max_cost: float | None) -> str:
    """The text of a ``--dry-run`` (``mmrbench eval`` and ``mmrbench mmad eval``)."""
    out_max = max_new * n_todo
    lines = [f"dry run: {title}: {n_selected} {unit} selected, {n_selected - n_todo} already answered, {n_todo} to ask",
             f"  input tokens  ~{input_tokens:,} (images {image_tokens:,} by the {rule} rule, "
             f"text at ~4 characters per token)",
             f"  output tokens <= {out_max:,} (max_new_tokens {max_new} per request)"]
    if prices is None:
        lines.append("  cost: unknown (the model card has no price_input_per_mtok / price_output_per_mtok)")
    else:
        lines.append(f"  cost: {prices.cost(input_tokens, 0):.4f} USD of input + at most {prices.cost(0, out_max):.4f} "
                     f"USD of output = at most {prices.cost(input_tokens, out_max):.4f} USD ({prices.input_per_mtok:g} / "
                     f"{prices.output_per_mtok:g} USD per million input / output tokens)")
        if max_cost is not None:
            lines.append(f"  --max-cost {max_cost:g} USD")
    lines.append("  nothing was sent or written")
    return "\n".join(lines)


class BudgetGuard:
    """``--max-cost``: stop sending when the spend, plus what the requests in flight will likely cost
    (this run's mean answer so far), reaches the budget. Answers in flight are still written, so the
    spend may pass the budget by those."""

    def __init__(self, spend: Spend, max_cost: float | None):
        self.spend, self.max_cost = spend, max_cost
        self.hit = max_cost is not None and spend.usd >= max_cost

    def __call__(self, in_flight: int) -> bool:
        if self.max_cost is None:
            return False
        if not self.hit and self.spend.usd + in_flight * self.spend.mean() >= self.max_cost:
            self.hit = True
        return self.hit
