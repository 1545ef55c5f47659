"""Pieces SFT and GRPO share: loading the training samples, the run folder, step timing."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from mmrbench.data.manifest import read_manifest
from mmrbench.errors import ConfigError
from mmrbench.train.data import DataOptions, ExampleBuilder
from mmrbench.train.recipe import Recipe

log = logging.getLogger(__name__)


def data_options(recipe: Recipe) -> DataOptions:
    d = recipe.data
    return DataOptions(prompt_variant=d.prompt_variant, answer_only=d.answer_only, use_reasoning=d.use_reasoning,
                       convention=recipe.model.convention)


def load_builder(recipe: Recipe, processor) -> ExampleBuilder:
    d = recipe.data
    if not d.manifest:
        raise ConfigError("no training data: give --data MANIFEST or data.manifest in the recipe")
    manifest = read_manifest(d.manifest)
    samples = manifest.select(split=d.split or None, subdatasets=d.subdatasets or None,
                              categories=d.categories or None)
    samples = sorted(samples, key=lambda s: s.id)  # manifest order must not change the run
    if d.max_samples:
        samples = samples[: d.max_samples]
    if not samples:
        raise ConfigError(f"{d.manifest}: no samples in split '{d.split}' with the given filters")
    return ExampleBuilder(samples, manifest.root, processor, data_options(recipe), all_samples=manifest.samples)


def write_run_info(out: Path, recipe: Recipe, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{recipe.kind}_recipe.json").write_text(json.dumps({**recipe.to_json(), **extra}, indent=1))
