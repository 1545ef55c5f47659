"""``hf`` provider: any transformers image-text-to-text model, run in-process.

``AutoModelForImageTextToText`` + the model's processor and chat template; requests are batched
(left padding) and answered with ``model.generate``. On CUDA the model runs in bf16 (``dtype`` /
``device_map`` options), on CPU in fp32. A PEFT LoRA adapter directory (``lora``) is loaded on top
of the base model, optionally merged (``merge``). A model folder that *is* an adapter (has
``adapter_config.json``) is resolved to its base model plus that adapter.

Sampling is exactly what the request asks for, never the checkpoint's ``generation_config.json``
defaults (Qwen2.5-VL ships top_k=1, top_p=0.001, repetition_penalty=1.05, which would silently
change a declared protocol): temperature 0 means greedy; otherwise temperature / top_p / top_k /
min_p with everything unset disabled. Anomaly-R1's paper setting (min-p 0.1, temperature 1.5,
512 new tokens) lives in its model card.

Coordinate frame: Qwen2-VL/2.5-VL resize every image (``smart_resize``; ``min_pixels`` /
``max_pixels``) and write boxes in pixels of the resized image. The size each image was actually
given to the vision tower (``image_grid_thw`` x patch size) is returned in
``Response.image_sizes``, so ``pixel`` boxes map back to the original exactly.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmrbench.adapters.base import GenerationConfig, ModelAPI, Request, Response, Usage, as_status
from mmrbench.errors import ConfigError, require

#: text markers of the answer format that must survive special-token stripping even when a
#: tokenizer registers them as special tokens
KEEP_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
           "float32": "float32", "fp32": "float32", "float": "float32"}


# ---------------------------------------------------------------------------------------------
# pure helpers (unit-tested without a model)
# ---------------------------------------------------------------------------------------------
def sampling_kwargs(cfg: GenerationConfig) -> dict[str, Any]:
    """``model.generate`` keyword arguments for a request's sampling settings.

    Every sampling knob is set explicitly so the checkpoint's generation_config.json cannot leak in.
    """
    kw: dict[str, Any] = {"max_new_tokens": int(cfg.max_new_tokens), "num_beams": 1,
                          "repetition_penalty": 1.0}
    if cfg.greedy:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None, min_p=None)
    else:
        kw.update(do_sample=True, temperature=float(cfg.temperature or 0.0),  # not greedy: a positive number
                  top_p=float(cfg.top_p) if cfg.top_p is not None else 1.0,
                  top_k=int(cfg.top_k) if cfg.top_k is not None else 0,
                  min_p=float(cfg.min_p) if cfg.min_p else None)
    return kw


def config_key(cfg: GenerationConfig) -> tuple:
    """Requests with equal keys can share one ``generate`` call."""
    return tuple(sorted(cfg.to_json().items()))


def finish(generated: Sequence[int], eos_ids: set[int], max_new_tokens: int) -> tuple[list[int], str]:
    """Cut one generated row at its first end-of-sequence token.

    Returns ``(tokens_before_eos, status)``: ``ok`` when an EOS token ended the answer,
    ``truncated`` when the budget of new tokens ran out first.
    """
    out: list[int] = []
    for t in generated:
        t = int(t)
        if t in eos_ids:
            return out, "ok"
        out.append(t)
    # generate pads a row only after its EOS, so a row without EOS is its full output
    return out, "truncated" if len(generated) >= max_new_tokens else "ok"


def special_ids_to_drop(tokenizer: Any) -> set[int]:
    """Ids of special tokens stripped from answers, sparing the answer-format markers."""
    keep = set()
    for t in KEEP_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(t)
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None):
            keep.add(tid)
    return {int(i) for i in getattr(tokenizer, "all_special_ids", []) if int(i) not in keep} | \
        {int(i) for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items()
         if getattr(tok, "special", False) and int(i) not in keep}


def group_sizes(sizes: list[tuple[int, int]], counts: list[int]) -> list[list[list[int]]]:
    """Split the flat list of per-image sizes into per-request lists."""
    out, i = [], 0
    for n in counts:
        out.append([[int(w), int(h)] for w, h in sizes[i:i + n]])
        i += n
    if i != len(sizes):
        raise ValueError(f"{len(sizes)} image sizes for {i} images")
    return out


def _transformers_at_least(transformers: Any, major: int, minor: int) -> bool:
    parts = re.findall(r"\d+", getattr(transformers, "__version__", "0.0"))[:2]
    got = tuple(int(p) for p in parts) + (0,) * (2 - len(parts))
    return got >= (major, minor)


@dataclass
class _Loaded:
    model: Any
    processor: Any
    device: Any


class HFModel(ModelAPI):
    provider = "hf"
    convention = "pixel"
    max_concurrency = 1
    batch_size = 4

    def __init__(self, model: str, *, convention: str | None = None, batch_size: int | None = None,
                 sampling: GenerationConfig | None = None, lora: str | None = None, merge: bool = False,
                 dtype: str | None = None, torch_dtype: str | None = None, device: str | None = None,
                 device_map: Any = None, min_pixels: int | None = None, max_pixels: int | None = None,
                 attn_implementation: str | None = None, trust_remote_code: bool = False,
                 revision: str | None = None, local_files_only: bool | None = None, **_ignored: Any):
        super().__init__(model)
        if convention:
            self.set_convention(convention)
        if batch_size:
            self.batch_size = int(batch_size)
        self.sampling = sampling or GenerationConfig()
        self.torch = require("torch", "hf", "the hf provider")
        self.transformers = require("transformers", "hf", "the hf provider")
        base, lora = self._resolve_adapter(model, lora)
        self.base = base
        self.lora = lora
        self.merge = bool(merge)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.revision = revision
        self._loaded = self._load(base, lora, dtype or torch_dtype, device, device_map, attn_implementation,
                                  trust_remote_code, revision, local_files_only)
        tok = getattr(self._loaded.processor, "tokenizer", self._loaded.processor)
        self._tokenizer = tok
        self._drop_ids = special_ids_to_drop(tok)
        self._eos_ids = self._collect_eos()
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(self._eos_ids, default=None)

    # -- loading ---------------------------------------------------------------------------------
    @staticmethod
    def _resolve_adapter(model: str, lora: str | None) -> tuple[str, str | None]:
        cfg = Path(model) / "adapter_config.json"
        if lora is None and cfg.is_file():
            try:
                base = json.loads(cfg.read_text()).get("base_model_name_or_path")
            except ValueError as exc:
                raise ConfigError(f"{cfg}: not valid JSON ({exc})") from None
            if not base:
                raise ConfigError(f"{cfg} names no base_model_name_or_path: pass the base model and --option lora=DIR")
            return base, model
        if lora is not None and not (Path(lora) / "adapter_config.json").is_file():
            raise ConfigError(f"LoRA adapter folder {lora} has no adapter_config.json")
        return model, lora

    def _load(self, base, lora, dtype, device, device_map, attn, trust, revision, local_only) -> _Loaded:
        torch, transformers = self.torch, self.transformers
        from mmrbench.adapters.hf_inputs import load_processor

        cuda = torch.cuda.is_available()
        if device is None and device_map is None:
            device = "cuda" if cuda else "cpu"
        if dtype in (None, "auto_default"):
            on_gpu = (device or "").startswith("cuda") or (device_map is not None and cuda)
            dtype = "bfloat16" if on_gpu else "float32"
        if dtype != "auto":
            if dtype not in _DTYPES:
                raise ConfigError(f"unknown dtype '{dtype}' (known: auto, {', '.join(sorted(_DTYPES))})")
            dtype = getattr(torch, _DTYPES[dtype])
        self.dtype_name = str(dtype).replace("torch.", "")
        # transformers >= 4.56 names it ``dtype``; older releases only know ``torch_dtype``
        kw: dict[str, Any] = {"dtype" if _transformers_at_least(transformers, 4, 56) else "torch_dtype": dtype}
        if device_map is not None:
            kw["device_map"] = device_map
        if attn:
            kw["attn_implementation"] = attn
        if trust:
            kw["trust_remote_code"] = True
        if revision:
            kw["revision"] = revision
        if local_only is not None:
            kw["local_files_only"] = bool(local_only)
        try:
            model = transformers.AutoModelForImageTextToText.from_pretrained(base, **kw)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model '{base}': {str(exc).splitlines()[0]}") from None
        pkw = {k: v for k, v in kw.items() if k in ("trust_remote_code", "revision", "local_files_only")}
        processor = load_processor(base, min_pixels=self.min_pixels, max_pixels=self.max_pixels, **pkw)
        if lora:
            peft = require("peft", "hf", "LoRA adapters")
            model = peft.PeftModel.from_pretrained(model, lora)
            if self.merge:
                model = model.merge_and_unload()
        if device_map is None:
            model = model.to(device)
        model.eval()
        dev = torch.device(device) if device_map is None else next(model.parameters()).device
        return _Loaded(model, processor, dev)

    def _collect_eos(self) -> set[int]:
        ids: set[int] = set()
        gc = getattr(self._loaded.model, "generation_config", None)
        for src in (getattr(gc, "eos_token_id", None), self._tokenizer.eos_token_id):
            if src is None:
                continue
            ids.update(int(i) for i in (src if isinstance(src, (list, tuple)) else [src]))
        return ids

    # -- generation ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"dtype": self.dtype_name, "device": str(self._loaded.device)})
        d.update(self.local_weights(self.base, self.lora))
        if self.lora:
            d.update({"base_model": self.base, "lora": str(self.lora), "merged": self.merge})
        from mmrbench.adapters.qwen_vision import resize_params
        rp = resize_params(getattr(self._loaded.processor, "image_processor", None))
        if rp:
            d["image_resize"] = rp
        return d

    def sent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) at which an image of ``size`` reaches the model (Qwen-VL's smart resize;
        unchanged for processors that do not resize that way)."""
        from mmrbench.adapters.qwen_vision import resize_params, sent_size

        return sent_size((int(size[0]), int(size[1])),
                         resize_params(getattr(self._loaded.processor, "image_processor", None)))

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        out: list[Response | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(config_key(r.config), []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), max(1, self.batch_size)):
                chunk = idx[s:s + self.batch_size]
                for i, resp in zip(chunk, self._generate_safe([requests[i] for i in chunk])):
                    out[i] = resp
        return [r for r in out if r is not None]

    def _generate_safe(self, reqs: list[Request]) -> list[Response]:
        try:
            return self._generate_batch(reqs)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the run
            if len(reqs) > 1:  # isolate the failing request (and survive batch-size OOM)
                if self.torch.cuda.is_available():
                    self.torch.cuda.empty_cache()
                return [r for req in reqs for r in self._generate_safe([req])]
            return [Response(text=None, status="error", error=f"{type(exc).__name__}: {exc}"[:500])]

    def _image_sizes(self, batch: Any, reqs: list[Request]) -> list[list[list[int]]]:
        from mmrbench.adapters.qwen_vision import resize_params, sent_size, sizes_from_grid

        counts = [len(r.images) for r in reqs]
        ip = getattr(self._loaded.processor, "image_processor", None)
        grid = batch.get("image_grid_thw") if hasattr(batch, "get") else None
        patch = getattr(ip, "patch_size", None)
        if grid is not None and patch:
            sizes = sizes_from_grid(grid.tolist(), int(patch))
        else:
            params = resize_params(ip)
            sizes = [sent_size(im.size, params) for r in reqs for im in r.images]
        return group_sizes(sizes, counts)

    def _generate_batch(self, reqs: list[Request]) -> list[Response]:
        from mmrbench.adapters.hf_inputs import encode_requests

        torch = self.torch
        cfg = reqs[0].config
        t0 = time.perf_counter()
        batch = encode_requests(self._loaded.processor, reqs, padding_side="left")
        sizes = self._image_sizes(batch, reqs)
        batch = batch.to(self._loaded.device)
        if "pixel_values" in batch and self._loaded.model.dtype != torch.float32:
            batch["pixel_values"] = batch["pixel_values"].to(self._loaded.model.dtype)
        kw = sampling_kwargs(cfg)
        kw["pad_token_id"] = self._pad_id
        kw["eos_token_id"] = sorted(self._eos_ids)
        if cfg.seed is not None:
            torch.manual_seed(int(cfg.seed))
        with torch.inference_mode():
            seqs = self._loaded.model.generate(**batch, **kw)
        elapsed = time.perf_counter() - t0
        prompt_len = batch["input_ids"].shape[1]
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        responses = []
        for row, r_sizes, n_prompt in zip(seqs[:, prompt_len:].tolist(), sizes, prompt_tokens):
            tokens, status = finish(row, self._eos_ids, int(cfg.max_new_tokens))
            text = self._tokenizer.decode([t for t in tokens if t not in self._drop_ids], skip_special_tokens=False)
            n_completion = len(tokens) + (1 if status == "ok" and len(tokens) < len(row) else 0)
            responses.append(Response(text=text, status=as_status(status), usage=Usage(int(n_prompt), n_completion),
                                      latency_s=elapsed, image_sizes=r_sizes))
        return responses

    def close(self) -> None:
        self._loaded = None  # type: ignore[assignment]
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()
