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


def register_provider(name: str, target: str, extra: str | None, description: str) -> None:
    _PROVIDERS[name] = ProviderInfo(name, target, extra, description)


def providers() -> list[ProviderInfo]:
    return [_PROVIDERS[k] for k in sorted(_PROVIDERS)]


def provider_class(name: str):
    info = _PROVIDERS.get(name)
    if info is None:
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(sorted(_PROVIDERS))})")
    module_name, cls_name = info.target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)


def create_model(provider: str, model: str, **kwargs: Any):
    """Instantiate a provider; the provider module itself imports its SDK lazily."""
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
