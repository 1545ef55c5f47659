"""Default recipes of the classical detectors and how a user recipe is merged over them.

The defaults live here *and* in ``baselines/padim.toml`` / ``baselines/patchcore.toml`` at the top of
the repository (what users read and copy); a test keeps the two identical. Keeping them in code
means an installed wheel, which does not ship the top-level folder, runs the same recipe.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from mmrbench.errors import ConfigError

_COMMON = {
    "backbone": {"name": "resnet18", "seed": 0},
    "boxes": {"min_area": 16, "nms_iou": 0.5},
    "thresholds": {"holdout_fraction": 0.2, "holdout_min": 2, "fair_quantile": 1.0},
    "batch_size": 8,
    "pixel_auroc_size": 128,
    "normalisation": "joint",
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "padim": {
        "method": "padim",
        **copy.deepcopy(_COMMON),
        "model": {"layers": ["layer1", "layer2", "layer3"], "d": 100, "eps": 0.01, "image_size": 256,
                  "blur_sigma": 4.0, "seed": 0},
    },
    "patchcore": {
        "method": "patchcore",
        **copy.deepcopy(_COMMON),
        "model": {"layers": ["layer2", "layer3"], "coreset_ratio": 0.1, "proj_dim": 128,
                  "coreset_precision": "half", "num_neighbors": 9,
                  "image_size": 256, "blur_sigma": 4.0, "seed": 0},
    },
}

METHOD_ALIASES = {"padim": "padim", "patchcore": "patchcore", "patch_core": "patchcore",
                  "detector:padim": "padim", "detector:patchcore": "patchcore"}


def canonical_method(method: str) -> str:
    m = METHOD_ALIASES.get(str(method).lower())
    if m is None:
        raise ConfigError(f"unknown detector '{method}' (known: padim, patchcore)")
    return m


def recipe_path(method: str) -> Path:
    """``baselines/<method>.toml`` of the source checkout."""
    return Path(__file__).resolve().parents[2] / "baselines" / f"{canonical_method(method)}.toml"


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    from mmrbench.validation import read_toml as read
    return read(path, "recipe", error=ConfigError)


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise ConfigError(f"recipe: unknown key '{where}{k}' (known: {', '.join(sorted(base))})")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"recipe: '{where}{k}' must be a table")
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


_OPTIONAL_MODEL_KEYS = {"padim": {"position_chunk"},
                        "patchcore": {"target_dim", "coreset_max", "bank_chunk"}}


def resolve_recipe(method: str, recipe: dict | str | os.PathLike | None) -> dict[str, Any]:
    """Defaults of ``method`` with ``recipe`` (a dict or a TOML path) merged over them."""
    m = canonical_method(method)
    base = copy.deepcopy(DEFAULTS[m])
    for k in _OPTIONAL_MODEL_KEYS[m]:
        base["model"].setdefault(k, None)
    if recipe is None:
        over: dict = {}
    elif isinstance(recipe, dict):
        over = recipe
    else:
        over = read_toml(recipe)
    over = dict(over)
    if "method" in over and canonical_method(over["method"]) != m:
        raise ConfigError(f"recipe is for '{over['method']}', not '{m}'")
    over.pop("method", None)
    out = _merge(base, over, "")
    out["model"] = {k: v for k, v in out["model"].items() if v is not None}
    check_recipe(m, out, str(recipe) if isinstance(recipe, (str, os.PathLike)) else "recipe")
    return out


def check_recipe(method: str, rec: dict[str, Any], where: str = "recipe") -> None:
    """Validate a resolved recipe (types, ranges, choices, and PaDiM's ``d`` against the channels the
    chosen backbone layers have), before any weights load or an earlier run is touched."""
    from mmrbench.vision.backbones import ARCHS, canonical_name
    from mmrbench.validation import validated
    from mmrbench.baselines.recipe_schema import schema_for
    validated(schema_for(method), rec, where, error=ConfigError)
    arch = ARCHS[canonical_name(rec["backbone"]["name"])]
    if method == "padim":
        total = sum(arch["block"].expansion * 64 * 2 ** (int(layer[-1]) - 1) for layer in rec["model"]["layers"])
        if rec["model"]["d"] > total:
            raise ConfigError(f"{where}: field 'model.d': {rec['model']['d']} channels asked, but layers "
                              f"{', '.join(rec['model']['layers'])} of {rec['backbone']['name']} have {total}")
