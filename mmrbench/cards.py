"""Model cards: one small TOML per model, and the spec strings that select a model on the command line.

A card says everything the result must record to be reproducible and fair: provider, model id,
sampling, how the model writes boxes (``convention``) and where that convention is documented,
which environment variable holds the key (never the key), concurrency, and the paper row it
reproduces. Spec strings accepted by ``--model``:

- ``PROVIDER:MODEL``  e.g. ``openai:gpt-4o``, ``gemini:gemini-2.5-pro``, ``hf:Qwen/Qwen2.5-VL-7B-Instruct``,
  ``vllm:...``, ``lmdeploy:...``, ``anomalygpt:...``, ``scripted:answers.jsonl``
- ``patchcore`` / ``padim``  the classical detectors
- a card name (file stem in the cards folder, e.g. ``gpt-4o``) or a path to a card TOML.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrbench.errors import ConfigError

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

DETECTORS = ("patchcore", "padim")

#: how each provider's models write boxes when a spec string names no card
DEFAULT_CONVENTIONS = {"openai": "pixel", "gemini": "gemini", "hf": "pixel", "vllm": "pixel", "lmdeploy": "pixel",
                       "anomalygpt": "pixel", "scripted": "pixel", "detector": "pixel"}

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "seed")
IMAGE_KEYS = ("resize", "max_side", "min_pixels", "max_pixels", "factor", "format", "detail")


@dataclass(frozen=True)
class ModelCard:
    name: str
    provider: str
    model_id: str
    display_name: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    require_key: bool | None = None
    convention: str = "pixel"
    convention_source: str | None = None
    reasoning: bool = False
    reasoning_effort: str | None = None
    stream: bool = False
    concurrency: int | None = None
    batch_size: int | None = None
    timeout_s: float | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    paper: str | None = None
    notes: str | None = None
    #: published prices, US dollars per million input (prompt) and output (completion) tokens
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    #: where and when the prices were read (a URL and a date)
    price_source: str | None = None
    path: str | None = None

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def generation_config(self):
        from mmrbench.adapters.base import GenerationConfig
        s = {k: v for k, v in self.sampling.items() if k in SAMPLING_KEYS}
        if self.reasoning and "temperature" not in s:
            s["temperature"] = None  # reasoning APIs take no temperature: record none
        return dataclasses.replace(GenerationConfig(), **s)

    def to_result_json(self) -> dict[str, Any]:
        """The card as recorded in result.json: no secrets (only the *name* of the key variable)."""
        from mmrbench.adapters.server_errors import redact_url
        d: dict[str, Any] = {
            "name": self.name, "display_name": self.title, "provider": self.provider, "model_id": self.model_id,
            "convention": self.convention, "sampling": self.generation_config().to_json(),
        }
        if self.base_url:
            d["base_url"] = redact_url(self.base_url)
        if self.api_key_env:
            d["api_key_env"] = self.api_key_env
        if self.reasoning:
            d["reasoning"] = True
        if self.reasoning_effort:
            d["reasoning_effort"] = self.reasoning_effort
        if self.image:
            d["image"] = dict(self.image)
        if self.options:
            d["options"] = {k: v for k, v in self.options.items() if not _secretish(k)}
        for k in ("convention_source", "paper"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        for k in ("price_input_per_mtok", "price_output_per_mtok", "price_source"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


def _secretish(key: str) -> bool:
    return bool(re.search(r"(key|token|secret|password)", key, re.I))


_FIELDS = {f.name for f in dataclasses.fields(ModelCard)} - {"path"}


@functools.lru_cache(maxsize=None)
def _schemas() -> Any:
    """pydantic models of a card's values (built on first use: pydantic is imported lazily)."""
    from typing import Annotated, Literal, Optional

    from pydantic import BaseModel, ConfigDict, Field

    # bounds written out per field (mypy accepts no calls inside an annotation): a finite float
    # (allow_inf_nan=False) or an int in [1, hi]
    strict = ConfigDict(strict=True, extra="forbid")

    class Sampling(BaseModel):
        model_config = strict
        max_new_tokens: Optional[Annotated[int, Field(ge=1, le=1_000_000)]] = None
        temperature: Optional[Annotated[float, Field(allow_inf_nan=False, ge=0, le=100)]] = None
        top_p: Optional[Annotated[float, Field(allow_inf_nan=False, gt=0, le=1)]] = None
        top_k: Optional[Annotated[int, Field(ge=0)]] = None
        min_p: Optional[Annotated[float, Field(allow_inf_nan=False, ge=0, le=1)]] = None
        seed: Optional[int] = None

    class ImageSettings(BaseModel):
        model_config = strict
        resize: Optional[Literal["none", "max_side", "smart"]] = None
        max_side: Optional[Annotated[int, Field(ge=1, le=100_000)]] = None
        min_pixels: Optional[Annotated[int, Field(ge=1, le=10**9)]] = None
        max_pixels: Optional[Annotated[int, Field(ge=1, le=10**9)]] = None
        factor: Optional[Annotated[int, Field(ge=1, le=1024)]] = None
        format: Optional[Literal["png", "jpeg"]] = None
        detail: Optional[Literal["auto", "low", "high"]] = None

    class Card(BaseModel):
        model_config = ConfigDict(strict=True, extra="allow")  # unknown keys are caught before, with the list
        concurrency: Optional[Annotated[int, Field(ge=1, le=4096)]] = None
        batch_size: Optional[Annotated[int, Field(ge=1, le=65_536)]] = None
        timeout_s: Optional[Annotated[float, Field(allow_inf_nan=False, gt=0, le=86_400)]] = None
        price_input_per_mtok: Optional[Annotated[float, Field(allow_inf_nan=False, ge=0, le=100_000)]] = None
        price_output_per_mtok: Optional[Annotated[float, Field(allow_inf_nan=False, ge=0, le=100_000)]] = None
        price_source: Optional[str] = None
        sampling: Sampling = Sampling()
        image: ImageSettings = ImageSettings()

    return Card


def check_values(d: dict[str, Any], where: str) -> None:
    """Types and ranges of a card's numbers and sampling (also after command-line overrides): a NaN
    temperature or a top-p of 5 fails here, before the first request, not once per request."""
    from mmrbench.validation import validated
    validated(_schemas(), {k: v for k, v in d.items() if v is not None}, where, error=ConfigError)


def cards_dir() -> Path:
    """``$MMRBENCH_CARDS_DIR`` or the repository's ``adapters/`` folder."""
    env = os.environ.get("MMRBENCH_CARDS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "adapters"


def card_from_dict(d: dict[str, Any], where: str = "<card>") -> ModelCard:
    from mmrbench.adapters.registry import provider_names
    from mmrbench.coords import CONVENTIONS
    unknown = sorted(set(d) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_FIELDS))})")
    for k in ("name", "provider", "model_id"):
        if not isinstance(d.get(k), str) or not d[k]:
            raise ConfigError(f"{where}: '{k}' must be a non-empty string")
    if d["provider"] not in provider_names():
        raise ConfigError(f"{where}: unknown provider '{d['provider']}' (known: {', '.join(provider_names())})")
    conv = d.get("convention", DEFAULT_CONVENTIONS.get(d["provider"], "pixel"))
    if conv not in CONVENTIONS:
        raise ConfigError(f"{where}: unknown convention '{conv}' (known: {', '.join(CONVENTIONS)})")
    for k in ("sampling", "image", "options"):
        if k in d and not isinstance(d[k], dict):
            raise ConfigError(f"{where}: '{k}' must be a table")
    bad = sorted(set(d.get("sampling", {})) - set(SAMPLING_KEYS))
    if bad:
        raise ConfigError(f"{where}: unknown sampling key(s) {', '.join(bad)} (known: {', '.join(SAMPLING_KEYS)})")
    bad = sorted(set(d.get("image", {})) - set(IMAGE_KEYS))
    if bad:
        raise ConfigError(f"{where}: unknown image key(s) {', '.join(bad)} (known: {', '.join(IMAGE_KEYS)})")
    check_values(d, where)
    return ModelCard(**{**d, "convention": conv})


def load_card(path: str | os.PathLike) -> ModelCard:
    from mmrbench.validation import read_toml
    p = Path(path)
    card = card_from_dict(read_toml(p, "model card", error=ConfigError), str(p))
    return dataclasses.replace(card, path=str(p))


def list_cards(directory: str | os.PathLike | None = None) -> list[ModelCard]:
    d = Path(directory) if directory else cards_dir()
    if not d.is_dir():
        return []
    return [load_card(p) for p in sorted(d.glob("*.toml"))]


def parse_spec(spec: str, directory: str | os.PathLike | None = None) -> ModelCard:
    """Turn a ``--model`` value into a card (see the module docstring for the accepted forms)."""
    from mmrbench.adapters.registry import provider_names
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("empty model spec")
    if spec.endswith(".toml") or (os.sep in spec and Path(spec).is_file() and ":" not in spec):
        return load_card(spec)
    low = spec.lower()
    if low in DETECTORS:
        return ModelCard(name=low, provider="detector", model_id=low, display_name={"patchcore": "PatchCore", "padim": "PaDiM"}[low],
                         convention="pixel", convention_source="boxes in original pixels from the score-map contours")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in provider_names():
        if not rest:
            raise ConfigError(f"model spec '{spec}' names no model after '{prefix}:'")
        if prefix == "detector":
            return parse_spec(rest, directory)
        name = rest.rstrip("/").split("/")[-1] or rest
        return ModelCard(name=name, provider=prefix, model_id=rest,
                         convention=DEFAULT_CONVENTIONS.get(prefix, "pixel"),
                         convention_source=f"default of the '{prefix}' provider (no card)")
    d = Path(directory) if directory else cards_dir()
    cand = d / f"{spec}.toml"
    if cand.is_file():
        return load_card(cand)
    if d.is_dir():
        for p in d.glob("*.toml"):
            if p.stem.lower() == low:
                return load_card(p)
    known = sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []
    raise ConfigError(f"unknown model '{spec}': use PROVIDER:MODEL ({', '.join(provider_names())}), "
                      f"patchcore, padim, a card TOML path, or a card name ({', '.join(known) or 'none found in ' + str(d)})")


def with_overrides(card: ModelCard, *, base_url: str | None = None, concurrency: int | None = None,
                   batch_size: int | None = None, timeout_s: float | None = None, convention: str | None = None,
                   sampling: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                   image: dict[str, Any] | None = None) -> ModelCard:
    """Command-line values win over the card's."""
    changes: dict[str, Any] = {}
    if base_url:
        changes["base_url"] = base_url
        if base_url != card.base_url:
            changes["require_key"] = None  # another server: a key is required only by official endpoints
    if concurrency is not None:
        changes["concurrency"] = concurrency
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if timeout_s is not None:
        changes["timeout_s"] = timeout_s
    if convention:
        from mmrbench.coords import check_convention
        changes["convention"] = check_convention(convention)
    if sampling:
        s = {k: v for k, v in sampling.items() if v is not None}
        bad = sorted(set(s) - set(SAMPLING_KEYS))
        if bad:
            raise ConfigError(f"unknown sampling key(s) {', '.join(bad)}")
        changes["sampling"] = {**card.sampling, **s}
    if image:
        changes["image"] = {**card.image, **{k: v for k, v in image.items() if v is not None}}
    if options:
        changes["options"] = {**card.options, **options}
    if not changes:
        return card
    out = dataclasses.replace(card, **changes)
    check_values({"concurrency": out.concurrency, "batch_size": out.batch_size, "timeout_s": out.timeout_s,
                  "sampling": out.sampling, "image": out.image}, "command line")
    return out


def model_kwargs(card: ModelCard, *, retry=None) -> dict[str, Any]:
    """Keyword arguments for the provider class, built from the card."""
    kw: dict[str, Any] = dict(card.options)
    kw["convention"] = card.convention
    for k in ("base_url", "api_key_env", "require_key", "reasoning_effort", "concurrency", "batch_size", "timeout_s"):
        v = getattr(card, k)
        if v is not None:
            kw[k] = v
    if card.reasoning:
        kw["reasoning"] = True
    if card.stream:
        kw["stream"] = True
    if card.image:
        from mmrbench.adapters.image_encoding import ImagePrep
        img = dict(card.image)
        detail = img.pop("detail", None)
        if img:
            kw["image_prep"] = ImagePrep(**img)
        if detail:
            kw["image_detail"] = detail
    if retry is not None:
        kw["retry"] = retry
    kw["sampling"] = card.generation_config()
    return kw


#: card fields and the command-line flag that sets each (for the error message)
_CARD_FLAGS = {"base_url": "--base-url", "api_key_env": "api_key_env", "require_key": "require_key",
               "reasoning_effort": "reasoning_effort", "concurrency": "--concurrency", "batch_size": "--batch-size",
               "timeout_s": "--timeout", "reasoning": "reasoning", "stream": "stream",
               "image_prep": "--max-image-side / [image]", "image_detail": "image.detail",
               "retry": "--retries / --retry-wait"}
#: passed to every provider that takes them; a provider without them reads sampling from each
#: request, and create_model sets the convention, concurrency and batch size as attributes
_ALWAYS = ("convention", "sampling", "concurrency", "batch_size")


def provider_options(cls) -> list[str]:
    """The keyword arguments a provider's constructor names: its valid ``--option`` keys."""
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return sorted(k for k, p in sig.parameters.items() if p.kind in kinds and k not in ("self", "model"))


def check_options(card: ModelCard, cls, kw: dict[str, Any]) -> dict[str, Any]:
    """No option is silently ignored: every ``--option``/card option and every card setting must be a
    keyword the provider's constructor names (a ``**kwargs`` catch-all does not count), else one
    error that lists the valid ones. ``--option lroa=PATH`` fails instead of evaluating the base model."""
    valid = set(provider_options(cls))
    bad_opts = sorted(k for k in card.options if k not in valid)
    if bad_opts:
        user_valid = sorted(valid - set(_CARD_FLAGS) - set(_ALWAYS) - {"client"})
        raise ConfigError(f"provider '{card.provider}' has no option {', '.join(map(repr, bad_opts))} "
                          f"(valid --option keys: {', '.join(user_valid) or 'none'})")
    for k in list(kw):
        if k in valid:
            continue
        if k in _ALWAYS:
            kw.pop(k)
            continue
        raise ConfigError(f"provider '{card.provider}' does not use {_CARD_FLAGS.get(k, k)}: remove it "
                          f"(or choose a provider that does)")
    return kw


def resolved_model_id(card: ModelCard) -> str:
    """A ``model_id`` written ``./...`` or ``../...`` in a card file is a folder relative to that file (so
    a card shipped beside its weights works from any working directory); results keep it as written,
    never the absolute path of one machine."""
    mid = card.model_id
    if card.path and mid.startswith(("./", "../")):
        return str((Path(card.path).parent / mid).resolve())
    return mid


def create_model(card: ModelCard, *, retry=None):
    """Instantiate the card's provider, passing only the keyword arguments its constructor takes
    (providers written by different people need not accept every card field)."""
    from mmrbench.adapters.registry import provider_class
    from mmrbench.errors import MissingExtraError
    try:
        cls = provider_class(card.provider)
    except ImportError as exc:
        from mmrbench.adapters.registry import provider_info
        info = provider_info(card.provider)
        if info is not None and info.extra:
            raise MissingExtraError(getattr(exc, "name", None) or card.provider, info.extra,
                                    f"the '{card.provider}' provider") from exc
        raise ConfigError(f"provider '{card.provider}' is not available: {exc}") from exc
    kw = check_options(card, cls, model_kwargs(card, retry=retry))
    model = cls(resolved_model_id(card), **kw)
    # a card's declared convention wins; a bare spec keeps whatever the provider itself worked out
    declared = not (card.convention_source or "").startswith("default of")
    if declared and getattr(model, "convention", None) != card.convention and card.provider != "detector":
        if hasattr(model, "set_convention"):
            model.set_convention(card.convention)  # a provider with a fixed convention refuses another
        else:  # a plug-in written without the base class's helper
            model.convention = card.convention
    if card.concurrency and hasattr(model, "max_concurrency"):
        model.max_concurrency = card.concurrency
    if card.batch_size and hasattr(model, "batch_size"):
        model.batch_size = card.batch_size
    return model
