"""Lazy provider registry, after timm's model registry.

Providers are named here with the module that implements them and the extra that module needs, so
``mmrbench models`` can list everything without importing a single SDK, and a missing SDK gives a
message that names the extra to install.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from mmrbench.errors import ConfigError


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    target: str  # "module:Class"
    extra: str | None
    description: str


_PROVIDERS: dict[str, ProviderInfo] = {}

#: entry-point group through which another package adds a provider, as lmms-eval and inspect_ai allow:
#: ``[project.entry-points."mmrbench.providers"] myprov = "my_pkg.module:MyModel"``; the class is
#: imported only when a spec names it (its optional ``EXTRA`` and ``DESCRIPTION`` attributes are
#: not read before that, so listing providers imports nothing)
ENTRY_POINT_GROUP = "mmrbench.providers"
_entry_points_loaded: list[bool] = []  # one element once loaded (a list, so loading rebinds nothing)


def register_provider(name: str, target: str, extra: str | None, description: str) -> None:
    _PROVIDERS[name] = ProviderInfo(name, target, extra, description)


def _load_entry_points() -> None:
    if _entry_points_loaded:
        return
    _entry_points_loaded.append(True)
    from importlib.metadata import entry_points
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _PROVIDERS:  # a built-in name is never taken over by a plug-in
            continue
        dist = getattr(getattr(ep, "dist", None), "name", None)
        _PROVIDERS[ep.name] = ProviderInfo(ep.name, ep.value, None,
                                           f"plug-in provider from {dist or 'an installed package'}")


def provider_names() -> list[str]:
    """Every provider name: the built-in ones and those installed packages add by entry point."""
    _load_entry_points()
    return sorted(_PROVIDERS)


def provider_info(name: str) -> ProviderInfo | None:
    _load_entry_points()
    return _PROVIDERS.get(name)


def providers() -> list[ProviderInfo]:
    return [_PROVIDERS[k] for k in provider_names()]


def provider_class(name: str):
    info = provider_info(name)
    if info is None:
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(provider_names())})")
    module_name, _, cls_name = info.target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise ConfigError(f"provider '{name}': {module_name} has no '{cls_name}'") from None


def instantiate(provider: str, model: str, **kwargs: Any):
    """A provider object straight from its class and keyword arguments, without a model card's checks
    (tests and library code that build a provider by hand). ``mmrbench.cards.create_model`` is the
    one that checks options against the constructor, resolves keys and records the card: use it for
    anything a user asked for."""
    return provider_class(provider)(model, **kwargs)


register_provider("openai", "mmrbench.adapters.openai_api:OpenAIModel", "api",
                  "OpenAI and every OpenAI-compatible server (vLLM serve, LMDeploy, SGLang, DashScope)")
register_provider("gemini", "mmrbench.adapters.gemini_api:GeminiModel", "api", "Google Gemini via google-genai")
register_provider("hf", "mmrbench.adapters.hf_local:HFModel", "hf",
                  "transformers image-text-to-text models (Qwen2.5-VL, InternVL, ...) and LoRA adapters")
register_provider("vllm", "mmrbench.adapters.vllm_engine:VLLMModel", "vllm", "vLLM offline engine (GPU)")
register_provider("lmdeploy", "mmrbench.adapters.lmdeploy_engine:LMDeployModel", "lmdeploy",
                  "LMDeploy pipeline (GPU)")
register_provider("anomalygpt", "mmrbench.adapters.anomalygpt:AnomalyGPTModel", None,
                  "AnomalyGPT through a worker process in its own environment")
register_provider("detector", "mmrbench.adapters.detector:DetectorModel", None,
                  "classical full-shot detectors (PaDiM, PatchCore)")
register_provider("scripted", "mmrbench.adapters.scripted:ScriptedModel", None,
                  "replays fixed answers from a JSONL file (tests, offline re-scoring)")
register_provider("chance", "mmrbench.mmad.chance:ChanceModel", None,
                  "chance level of multiple-choice questions (MMAD): a seeded uniform option letter; not a model")
