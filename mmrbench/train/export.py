"""Merge a trained LoRA adapter into its base model and save one self-contained model folder.

Why: the trainer writes an adapter that names its base by path or hub id. A folder that must travel
(the bundled reference entry, a model handed to ``vllm serve`` or LMDeploy, which want plain weights)
should not depend on where the base was on the training machine. The merged folder holds the
weights (safetensors), the base's processor and chat template, its generation config, and
``export.json``: which adapter, which base, and the SHA-256 of the adapter's weights, so a row on the
board can be traced back to the training run that produced it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mmrbench.errors import ConfigError, require


@dataclass(frozen=True)
class ExportInfo:
    """What ``export.json`` records about a merged model."""

    adapter: str
    base: str
    adapter_weights_sha256: str
    dtype: str
    lora_r: int | None
    modules_to_save: list[str]


def _adapter_config(adapter: Path) -> dict:
    cfg = adapter / "adapter_config.json"
    if not cfg.is_file():
        raise ConfigError(f"{adapter} is not an adapter folder (no adapter_config.json)")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{cfg}: not valid JSON ({exc})") from None


def export_merged(adapter: str | os.PathLike, out: str | os.PathLike, *, base: str | None = None,
                  dtype: str = "float32") -> ExportInfo:
    """Load ``base`` (default: the adapter's ``base_model_name_or_path``), apply the adapter, merge
    it (LoRA deltas into the weights, ``modules_to_save`` copies in place of the originals) and save
    the result with the base's processor to ``out``."""
    from mmrbench.data.manifest import file_sha256

    torch = require("torch", "train", "exporting a model")
    from mmrbench.train.policy import resolve_dtype  # the trainer's dtype names (and its error)

    out_dtype = resolve_dtype(dtype, torch.device("cpu"))
    transformers = require("transformers", "train", "exporting a model")
    peft = require("peft", "train", "exporting a model")
    adapter = Path(adapter)
    cfg = _adapter_config(adapter)
    base = base or cfg.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter}/adapter_config.json names no base model: pass --base")
    weights = next((adapter / n for n in ("adapter_model.safetensors", "adapter_model.bin")
                    if (adapter / n).is_file()), None)
    if weights is None:
        raise ConfigError(f"{adapter} has no adapter_model.safetensors")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty: choose a new folder")
    try:
        model = transformers.AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load base model '{base}': {str(exc).splitlines()[0]}") from None
    merged = peft.PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged = merged.to(out_dtype)
    from mmrbench.adapters.hf_inputs import load_processor

    processor = load_processor(base)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    info = ExportInfo(adapter=str(adapter), base=str(base), adapter_weights_sha256=file_sha256(weights),
                      dtype=str(out_dtype).replace("torch.", ""),
                      lora_r=cfg.get("r"), modules_to_save=list(cfg.get("modules_to_save") or []))
    (out / "export.json").write_text(json.dumps(asdict(info), indent=1) + "\n", encoding="utf-8")
    return info
