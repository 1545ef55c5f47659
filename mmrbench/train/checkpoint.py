"""Checkpoints: the peft adapter folder plus optimizer, scheduler and loop state.

Layout under the run folder::

    checkpoint-<step>/adapter_config.json, adapter_model.safetensors   (peft)
    checkpoint-<step>/optimizer.pt, scheduler.pt                        (torch, loaded weights_only)
    checkpoint-<step>/trainer_state.json                                ({"step": ..., "kind": ...})
    adapter_config.json, adapter_model.safetensors                      (the final adapter, at the top)

A checkpoint is written to a temporary folder and renamed into place, so a crash never leaves a
half-written ``checkpoint-N`` that resume would pick up. The top-level adapter is what
``mmrbench eval --model hf:BASE --lora RUN_DIR`` and model cards point at.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    d = Path(run_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and (p / "trainer_state.json").exists()]
    return max(found)[1] if found else None


def save_adapter(model: Any, out: str | os.PathLike) -> None:
    model.save_pretrained(str(out))


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: Any, optimizer, scheduler,
                    state: dict[str, Any]) -> Path:
    run = Path(run_dir)
    final = run / f"checkpoint-{step}"
    tmp = run / f".tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_adapter(model, tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    # RNG state (dropout, sampling) so that a resumed run continues exactly where it stopped
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_adapter_weights(model: Any, adapter_dir: str | os.PathLike, adapter_name: str = "default") -> None:
    """Load saved LoRA weights into an existing peft model (same config)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    f = d / "adapter_model.safetensors"
    if f.exists():
        sd = load_file(str(f))
    else:
        sd = torch.load(d / "adapter_model.bin", map_location="cpu", weights_only=True)
    res = set_peft_model_state_dict(model, sd, adapter_name=adapter_name)
    unexpected = getattr(res, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"adapter {d} does not fit the model: unexpected keys {unexpected[:3]}")


def load_checkpoint(ckpt: str | os.PathLike, model: Any, optimizer, scheduler) -> dict[str, Any]:
    d = Path(ckpt)
    load_adapter_weights(model, d)
    optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(d / "scheduler.pt", map_location="cpu", weights_only=True))
    if (d / "rng.pt").exists():
        rng = torch.load(d / "rng.pt", map_location="cpu", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((d / "trainer_state.json").read_text())


class JsonlLog:
    """One JSON object per step, appended and flushed (a crash loses nothing already logged)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_after(self, step: int) -> None:
        """On resume, drop log lines of steps the checkpoint does not include."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(k + "\n" for k in keep))
