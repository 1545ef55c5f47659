"""Training recipes: TOML files -> typed dataclasses.

A recipe has sections ``[model]``, ``[lora]``, ``[data]`` and one of ``[sft]`` / ``[grpo]``. Defaults
are the paper's hyper-parameters (Sec. 4, App. D), so ``baselines/anomaly-r1/sft.toml`` mostly
names the base model. ``extends = "other.toml"`` (relative to the file) inherits another recipe and
overrides keys section by section: the Table-5 ablations are a few lines each. Unknown keys are
errors (a typo must not silently train with a default).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrbench.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelSection:
    base: str = "Qwen/Qwen2.5-VL-7B-Instruct"   # hub id or local folder
    dtype: str = "auto"                         # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    device: str = "auto"                        # auto | cpu | cuda | cuda:N
    gradient_checkpointing: bool = False        # turn on for 7B on one GPU
    attn_implementation: str = ""               # e.g. sdpa, flash_attention_2; empty = transformers' default
    min_pixels: int = 0                         # Qwen-VL resize bounds; 0 = the processor's own
    max_pixels: int = 0
    convention: str = "pixel"                   # how the policy writes boxes


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    target: str = "language"                    # language: every linear layer of the language model, none of
                                                # `visual` (the paper); all: the vision tower too (tiny models from scratch)
    modules_to_save: list[str] = field(default_factory=list)  # fully trained and saved with the adapter (e.g. lm_head)


@dataclass
class DataSection:
    manifest: str = ""
    split: str = "train"
    subdatasets: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    prompt_variant: str = "default"             # default | no_reference | domain_knowledge
    answer_only: bool = False                   # ablation: no reasoning text
    use_reasoning: bool = True
    max_samples: int = 0                        # 0 = all


@dataclass
class SFTSection:
    lr: float = 2e-5
    batch_size: int = 4                         # global, across ranks
    micro_batch_size: int = 0                   # per forward; 0 = the rank's share of the batch
    epochs: float = 3.0
    max_steps: int = 0                          # 0 = from epochs
    warmup_ratio: float = 0.1
    weight_decay: float = 0.1
    lr_scheduler: str = "linear"                # any transformers.get_scheduler name
    max_grad_norm: float = 1.0
    max_length: int = 4096
    save_steps: int = 0                         # 0 = at the end only
    seed: int = 0
    # auxiliary per-token defect loss on the query's image tokens (mmrbench/train/token_loss.py; not in
    # the paper): its weight (0 = off) and after how many decoder layers it reads (0 = the last)
    token_loss_weight: float = 0.0
    token_loss_layer: int = 0
    # auxiliary position loss (same module, same layer): image tokens say their own row and column
    position_loss_weight: float = 0.0
    # auxiliary attention loss (same module): head 0 of decoder layer attention_loss_layer (1-based, 0 = the
    # last) looks at the query's defect while the answer's box digits are written; runs eager attention
    attention_loss_weight: float = 0.0
    attention_loss_layer: int = 0


@dataclass
class GRPOSection:
    lr: float = 2e-6
    prompt_batch: int = 32                      # prompts per rollout, global
    group_size: int = 8                         # G responses per prompt
    mini_batch: int = 8                         # prompts per optimizer update (prompt_batch / mini_batch updates)
    clip_eps: float = 0.2
    beta: float = 0.001                         # k3 KL to the reference (adapter disabled)
    kl_estimator: str = "k3"                    # k3 (paper, TRL use_bias_correction_kl=False) | k3_ratio (TRL's
                                                # default: k3 x importance ratio, unbiased reverse-KL gradient)
    box_reward: str = "paper"                   # paper (-0.2 per defect not boxed at IoU > 0.5) | giou (graded by
                                                # generalized IoU; a departure, mmrbench.train.rewards)
    epochs: float = 1.0
    max_steps: int = 0                          # rollouts; 0 = from epochs
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    max_prompt_tokens: int = 2048               # images included; longer prompts are skipped
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    init_adapter: str = ""                      # the SFT adapter (cold start); empty = fresh LoRA (ablation)
    contrastive: bool = True                    # verified positive per group + opposite-hint negatives
    n_negatives: int = 2
    negatives_model: str = ""                   # adapter spec for negatives (e.g. openai:gpt-4o); empty = policy
    save_steps: int = 0
    seed: int = 0


@dataclass
class Recipe:
    kind: str                                   # sft | grpo
    model: ModelSection
    lora: LoraSection
    data: DataSection
    train: Any                                  # SFTSection | GRPOSection
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": dataclasses.asdict(self.model), "lora": dataclasses.asdict(self.lora),
                "data": dataclasses.asdict(self.data), self.kind: dataclasses.asdict(self.train),
                "source": self.source}


_SECTIONS = {"model": ModelSection, "lora": LoraSection, "data": DataSection, "sft": SFTSection, "grpo": GRPOSection}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"recipe {path}: 'extends' loops back to itself")
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {path}: {exc}") from None
    parent = raw.pop("extends", None)
    if parent:
        raw = _merge(_load_raw(path.parent / parent, seen + (path,)), raw)
    return raw


def _typed(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    obj = cls()
    for k, v in d.items():
        want = type(getattr(obj, k))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"{where}.{k}: expected {want.__name__}, got {type(v).__name__} ({v!r})")
        setattr(obj, k, v)
    return obj


def parse_value(text: str) -> Any:
    """A command-line override value, read as TOML (``3``, ``2e-5``, ``true``, ``"x"``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def recipe_from_dict(raw: dict, kind: str | None = None, source: str = "") -> Recipe:
    raw = dict(raw)
    kinds = [k for k in ("sft", "grpo") if k in raw]
    kind = kind or (kinds[0] if len(kinds) == 1 else None)
    if kind not in ("sft", "grpo"):
        raise ConfigError(f"recipe {source or ''}: cannot tell sft from grpo (give exactly one of [sft], [grpo])")
    other = "grpo" if kind == "sft" else "sft"
    if other in raw and kind not in raw:
        raise ConfigError(f"recipe {source}: it is a [{other}] recipe, not a [{kind}] one")
    extra = sorted(set(raw) - set(_SECTIONS))
    if extra:
        raise ConfigError(f"recipe {source}: unknown section(s) {', '.join(extra)}")
    secs = {name: _typed(cls, raw.get(name, {}), name) for name, cls in _SECTIONS.items() if name in ("model", "lora", "data", kind)}
    r = Recipe(kind=kind, model=secs["model"], lora=secs["lora"], data=secs["data"], train=secs[kind], source=source)
    validate(r)
    return r


def load_recipe(path: str | Path | None, kind: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load a recipe (or the defaults when ``path`` is None) and apply ``section.key`` overrides."""
    raw = _load_raw(Path(path)) if path else {}
    for dotted, v in (overrides or {}).items():
        if "." not in dotted:
            raise ConfigError(f"override '{dotted}': use section.key, e.g. {kind}.lr=1e-5")
        sec, key = dotted.split(".", 1)
        raw.setdefault(sec, {})[key] = v
    return recipe_from_dict(raw, kind, str(path or "<defaults>"))


#: (section, key) -> (low, high, low inclusive, high inclusive); every other number must be finite and,
#: when an int, non-negative (a NaN temperature or r = 1e11 fails here, not inside the model)
_BOUNDS: dict[tuple[str, str], tuple[float, float, bool, bool]] = {
    ("lora", "r"): (1, 4096, True, True), ("lora", "alpha"): (0, 1e6, False, True),
    ("lora", "dropout"): (0, 1, True, False),
    ("train", "lr"): (0, 1, False, True), ("train", "warmup_ratio"): (0, 1, True, True),
    ("train", "weight_decay"): (0, 10, True, True), ("train", "max_grad_norm"): (0, 1e6, False, True),
    ("train", "epochs"): (0, 1e6, False, True), ("train", "temperature"): (0, 100, False, True),
    ("train", "top_p"): (0, 1, False, True), ("train", "clip_eps"): (0, 10, False, True),
    ("train", "beta"): (0, 100, True, True), ("train", "max_new_tokens"): (1, 1_000_000, True, True),
    ("train", "max_prompt_tokens"): (1, 10_000_000, True, True), ("train", "max_length"): (1, 10_000_000, True, True),
    ("train", "group_size"): (1, 4096, True, True), ("train", "prompt_batch"): (1, 1_000_000, True, True),
    ("train", "mini_batch"): (1, 1_000_000, True, True), ("train", "batch_size"): (1, 1_000_000, True, True),
    ("train", "token_loss_weight"): (0, 1e6, True, True), ("train", "token_loss_layer"): (0, 1000, True, True),
    ("train", "position_loss_weight"): (0, 1e6, True, True),
    ("train", "attention_loss_weight"): (0, 1e6, True, True), ("train", "attention_loss_layer"): (0, 1000, True, True),
}


def _check_numbers(r: Recipe) -> None:
    import math
    for sec_name in ("model", "lora", "data", "train"):
        sec = getattr(r, sec_name)
        label = r.kind if sec_name == "train" else sec_name
        for f in dataclasses.fields(sec):
            v = getattr(sec, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            where = f"{label}.{f.name}"
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where} must be a finite number, got {v}")
            bound = _BOUNDS.get((sec_name, f.name))
            if bound is None:
                if isinstance(v, int) and v < 0:
                    raise ConfigError(f"{where} must not be negative, got {v}")
                continue
            lo, hi, lo_in, hi_in = bound
            ok = (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
            if not ok:
                raise ConfigError(f"{where} must be in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}, got {v}")


def validate(r: Recipe) -> None:
    from mmrbench.coords import check_convention
    from mmrbench.prompts import VARIANTS

    _check_numbers(r)
    check_convention(r.model.convention)
    if r.data.prompt_variant not in VARIANTS:
        raise ConfigError(f"data.prompt_variant '{r.data.prompt_variant}' unknown (known: {', '.join(VARIANTS)})")
    if r.lora.r <= 0:
        raise ConfigError("lora.r must be positive")
    t = r.train
    if t.lr <= 0:
        raise ConfigError(f"{r.kind}.lr must be positive")
    if r.kind == "grpo":
        if t.group_size < 2:
            raise ConfigError("grpo.group_size must be at least 2 (advantages are relative within a group)")
        if t.mini_batch <= 0 or t.prompt_batch % t.mini_batch:
            raise ConfigError(f"grpo.prompt_batch ({t.prompt_batch}) must be a multiple of grpo.mini_batch ({t.mini_batch})")
        from mmrbench.train.grpo_math import KL_ESTIMATORS

        if t.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(f"grpo.kl_estimator '{t.kl_estimator}' unknown (known: {', '.join(KL_ESTIMATORS)})")
        from mmrbench.train.rewards import BOX_REWARDS

        if t.box_reward not in BOX_REWARDS:
            raise ConfigError(f"grpo.box_reward '{t.box_reward}' unknown (known: {', '.join(BOX_REWARDS)})")
        if t.contrastive and t.n_negatives > t.group_size - 1:
            raise ConfigError("grpo.n_negatives must leave room for the positive in the group")
    elif t.batch_size <= 0:
        raise ConfigError("sft.batch_size must be positive")
