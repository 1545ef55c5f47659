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


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def recipe_changes(out: Path, recipe: Recipe) -> list[str] | None:
    """The settings of ``recipe`` that differ from those an earlier run saved in ``out``
    (``"sft.max_steps: 3 -> 4"``), or None when ``out`` holds no saved recipe. The recipe file's path
    (``source``) is not compared: the settings are."""
    saved_path = Path(out) / f"{recipe.kind}_recipe.json"
    if not saved_path.exists():
        return None
    want = _flat(json.loads(json.dumps(recipe.to_json())))  # tuples as lists, as the saved file holds them
    saved = _flat(json.loads(saved_path.read_text(encoding="utf-8")))
    return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in want.items() if k != "source" and saved.get(k) != v]


def check_resume(out: Path, recipe: Recipe) -> None:
    """Refuse to resume a checkpoint trained with other settings.

    Why: resuming would finish another configuration's run under this recipe's name, and
    :func:`write_run_info` would then overwrite the record of what the first steps were trained with."""
    changes = recipe_changes(out, recipe)
    if changes:
        raise ConfigError(f"{out} holds a {recipe.kind} run trained with other settings ({'; '.join(changes)}): "
                          "use --no-resume (resume=False) to start over, or another run folder")


def write_run_info(out: Path, recipe: Recipe, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{recipe.kind}_recipe.json").write_text(json.dumps({**recipe.to_json(), **extra}, indent=1))
