"""Loading the policy: base model + processor on the right device and dtype, wrapped with LoRA.

LoRA targets every linear layer of the language model and none of the vision tower (``visual``)
or the output head (:func:`mmrbench.adapters.hf_inputs.language_lora_targets`). The reference
policy of GRPO is the same model with the adapter disabled (``model.disable_adapter()``), so no
second copy of the weights is held.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from mmrbench.errors import ConfigError, require
from mmrbench.train.recipe import LoraSection, ModelSection

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Policy:
    model: Any            # peft model
    processor: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return [ids] if isinstance(ids, int) else list(ids)

    def multimodal_token_ids(self) -> list[int]:
        """Image/video placeholder and vision delimiter ids: a completion must never contain them
        (the model would look for image features that do not exist), so generation suppresses them."""
        cfg = getattr(self.model, "config", None)
        ids = []
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                     "image_token_index", "video_token_index"):
            v = getattr(cfg, name, None)
            if isinstance(v, int) and v not in ids:
                ids.append(v)
        return ids

    def pad_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return pid if pid is not None else self.eos_ids()[0]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device '{name}' requested but CUDA is not available")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"model.dtype '{name}' unknown (auto, {', '.join(_DTYPES)})")
    return _DTYPES[name]


def load_policy(model_cfg: ModelSection, lora_cfg: LoraSection, *, init_adapter: str = "",
                local_rank: int = 0, base_override: str | None = None) -> Policy:
    transformers = require("transformers", "train", "the Anomaly-R1 trainer")
    peft = require("peft", "train", "the Anomaly-R1 trainer")
    from mmrbench.adapters.hf_inputs import load_processor

    base = base_override or model_cfg.base
    device = resolve_device(model_cfg.device, local_rank)
    dtype = resolve_dtype(model_cfg.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    try:
        model = transformers.AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model '{base}': {exc}") from None
    model.to(device)
    processor = load_processor(base, min_pixels=model_cfg.min_pixels or None, max_pixels=model_cfg.max_pixels or None)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.config.use_cache = False
    if init_adapter:
        model = peft.PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        cfg = peft.LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                              target_modules=lora_targets(model, lora_cfg.target), bias="none",
                              modules_to_save=list(lora_cfg.modules_to_save) or None)
        model = peft.get_peft_model(model, cfg)
    model.to(device)
    # LoRA weights train in fp32 even on a bf16 base (tiny, and Adam is unstable in bf16)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return Policy(model=model, processor=processor, device=device, dtype=dtype)


def lora_targets(model: Any, target: str) -> list[str]:
    """``language``: the paper's choice (language model only). ``all``: the vision tower's linear
    layers too, for models trained from scratch (a random vision tower must learn to see)."""
    from mmrbench.adapters.hf_inputs import language_lora_targets

    if target == "language":
        return language_lora_targets(model)
    if target == "all":
        return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    raise ConfigError(f"lora.target '{target}' unknown (language, all)")


def make_optimizer(policy: Policy, lr: float, weight_decay: float, scheduler_name: str, total_steps: int,
                   warmup_ratio: float):
    """AdamW over the LoRA weights and a transformers learning-rate schedule with linear warmup."""
    transformers = require("transformers", "train")
    params = policy.trainable_parameters()
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = int(round(warmup_ratio * total_steps))
    sched = transformers.get_scheduler(scheduler_name, optimizer=opt, num_warmup_steps=warmup,
                                       num_training_steps=max(total_steps, 1))
    return opt, sched


def to_device(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Move a batch; floating inputs (pixel values) take the model's dtype."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out
