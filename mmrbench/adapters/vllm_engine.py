"""``vllm`` provider: vLLM's offline engine in-process (GPU; optional extra ``mmrbench[vllm]``).

For models too large for one GPU use ``tensor_parallel_size``; the other route, a ``vllm serve``
process behind the ``openai`` provider, is documented in docs/local-models.md.

The request is rendered with the model's own chat template (through its transformers processor,
the same path as the ``hf`` provider), tokenised here with ``add_special_tokens=False`` and sent
as ``{"prompt_token_ids": ids, "multi_modal_data": {"image": [reference, query]}}``; vLLM expands
the image placeholders in the token ids. The rendered template already holds every special token
it wants; a text prompt would be tokenised again by vLLM *with* special tokens (its default), which
doubles the BOS of templates that emit one (Llama, Gemma). Token prompts with multi-modal data are
accepted from vLLM 0.7.2 (the floor, the first release with Qwen2.5-VL) on.

Sampling is set per request (``SamplingParams``, with the request's seed when it has one). vLLM
itself warns that outputs are not guaranteed to be identical across batch compositions (batched
kernels reduce in a different order, so near-ties can flip), so a run is reproducible only with the
same batch size and order; the ``hf`` provider has the same caveat. Stop status comes from vLLM's
``finish_reason`` (``length`` -> truncated), usage from the token ids. For Qwen-VL models the sent
image sizes follow the processor's ``smart_resize`` with the ``min_pixels`` / ``max_pixels`` that
are also handed to vLLM (``mm_processor_kwargs``), so ``pixel`` boxes map back exactly.

The request building and output mapping are plain functions, unit-tested without the engine.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from mmrbench.adapters.base import GenerationConfig, ModelAPI, Request, Response, Usage, as_status
from mmrbench.errors import ConfigError, require


def sampling_params_kwargs(cfg: GenerationConfig) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments; every knob explicit (the checkpoint's
    generation_config.json defaults never leak in)."""
    kw: dict[str, Any] = {"max_tokens": int(cfg.max_new_tokens), "n": 1, "repetition_penalty": 1.0,
                          "skip_special_tokens": True}
    if cfg.greedy:
        kw.update(temperature=0.0, top_p=1.0, top_k=-1, min_p=0.0)
    else:
        kw.update(temperature=float(cfg.temperature or 0.0),  # not greedy: a positive number
                  top_p=float(cfg.top_p) if cfg.top_p is not None else 1.0,
                  top_k=int(cfg.top_k) if cfg.top_k else -1,
                  min_p=float(cfg.min_p) if cfg.min_p else 0.0)
    if cfg.seed is not None:
        kw["seed"] = int(cfg.seed)
    return kw


def build_prompt(processor: Any, request: Request, resize: dict[str, int] | None) -> tuple[dict[str, Any], list[list[int]]]:
    """The engine input for one request and the (width, height) of each image as the model sees it."""
    from mmrbench.adapters.hf_inputs import chat_messages, render
    from mmrbench.adapters.qwen_vision import sent_size

    conv, images = chat_messages(request.messages)
    text = render(processor, conv, add_generation_prompt=True)
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt: dict[str, Any] = {"prompt_token_ids": [int(i) for i in ids]}
    if images:
        prompt["multi_modal_data"] = {"image": images}
    sizes = [list(sent_size(im.size, resize)) for im in images]
    return prompt, sizes


def map_output(output: Any, sizes: list[list[int]], latency_s: float | None) -> Response:
    """A vLLM ``RequestOutput`` -> :class:`Response` (status from ``finish_reason``)."""
    outs = getattr(output, "outputs", None) or []
    if not outs:
        return Response(text=None, status="error", error="vLLM returned no completion", image_sizes=sizes,
                        latency_s=latency_s)
    comp = outs[0]
    reason = getattr(comp, "finish_reason", None)
    usage = Usage(len(getattr(output, "prompt_token_ids", None) or []), len(getattr(comp, "token_ids", None) or []))
    text = getattr(comp, "text", None)
    if reason == "length":
        status, err = "truncated", None
    elif reason == "stop":
        status, err = "ok", None
    else:  # 'abort' or unfinished
        status, err = "error", f"vLLM finish_reason={reason!r}"
    return Response(text=text, status=as_status(status), error=err, usage=usage, latency_s=latency_s,
                    image_sizes=sizes)


class VLLMModel(ModelAPI):
    provider = "vllm"
    convention = "pixel"
    max_concurrency = 1
    batch_size = 64  # vLLM schedules continuously; large batches keep the GPU busy

    def __init__(self, model: str, *, convention: str | None = None, batch_size: int | None = None,
                 sampling: GenerationConfig | None = None, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                 dtype: str = "auto", min_pixels: int | None = None, max_pixels: int | None = None,
                 max_images: int = 2, lora: str | None = None, max_lora_rank: int = 64, seed: int = 0,
                 trust_remote_code: bool = False, enforce_eager: bool = False, engine_kwargs: dict | None = None,
                 **_ignored: Any):
        super().__init__(model)
        vllm = require("vllm", "vllm", "the vllm provider")
        from mmrbench.adapters.hf_inputs import load_processor
        from mmrbench.adapters.qwen_vision import resize_params

        if convention:

            self.set_convention(convention)
        if batch_size:
            self.batch_size = int(batch_size)
        self.sampling = sampling or GenerationConfig()
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.lora = lora
        self.processor = load_processor(model, min_pixels=min_pixels, max_pixels=max_pixels,
                                        trust_remote_code=trust_remote_code)
        self.resize = resize_params(getattr(self.processor, "image_processor", None))
        kw = engine_args(model, tensor_parallel_size=self.tensor_parallel_size, max_model_len=max_model_len,
                         gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, min_pixels=min_pixels,
                         max_pixels=max_pixels, max_images=max_images, lora=lora, max_lora_rank=max_lora_rank,
                         seed=seed, trust_remote_code=trust_remote_code, enforce_eager=enforce_eager,
                         extra=engine_kwargs)
        self.engine_kwargs = kw
        self._vllm = vllm
        self.llm = vllm.LLM(**kw)
        self._lora_request = None
        if lora:
            from vllm.lora.request import LoRARequest
            self._lora_request = LoRARequest("mmrbench-lora", 1, str(lora))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["engine"] = {k: v for k, v in self.engine_kwargs.items() if k != "model"}
        if self.resize:
            d["image_resize"] = self.resize
        if self.lora:
            d["lora"] = str(self.lora)
        d.update(self.local_weights(self.model, self.lora))
        return d

    def sent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) at which an image of ``size`` reaches the model."""
        from mmrbench.adapters.qwen_vision import sent_size

        return sent_size((int(size[0]), int(size[1])), self.resize)

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        prepared, failed = [], {}
        for i, r in enumerate(requests):
            try:
                prepared.append((i, *build_prompt(self.processor, r, self.resize)))
            except Exception as exc:  # noqa: BLE001
                failed[i] = Response(text=None, status="error", error=f"{type(exc).__name__}: {exc}"[:500])
        out: dict[int, Response] = dict(failed)
        if prepared:
            for (i, _, _), resp in zip(prepared, self._run(prepared, requests)):
                out[i] = resp
        return [out[i] for i in range(len(requests))]

    def _run(self, prepared, requests) -> list[Response]:
        params = [self._vllm.SamplingParams(**sampling_params_kwargs(requests[i].config)) for i, _, _ in prepared]
        t0 = time.perf_counter()
        try:
            kw: dict[str, Any] = {"use_tqdm": False}
            if self._lora_request is not None:
                kw["lora_request"] = self._lora_request
            outputs = self.llm.generate([p for _, p, _ in prepared], params, **kw)
        except Exception as exc:  # noqa: BLE001 - one bad request must not sink the batch
            if len(prepared) > 1:
                return [r for item in prepared for r in self._run([item], requests)]
            return [Response(text=None, status="error", error=f"{type(exc).__name__}: {exc}"[:500],
                             image_sizes=prepared[0][2])]
        elapsed = time.perf_counter() - t0
        if len(outputs) != len(prepared):
            return [Response(text=None, status="error", error=f"vLLM returned {len(outputs)} outputs for "
                             f"{len(prepared)} prompts", image_sizes=s) for _, _, s in prepared]
        return [map_output(o, s, elapsed) for o, (_, _, s) in zip(outputs, prepared)]


def engine_args(model: str, *, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                gpu_memory_utilization: float | None = None, dtype: str = "auto", min_pixels: int | None = None,
                max_pixels: int | None = None, max_images: int = 2, lora: str | None = None,
                max_lora_rank: int = 64, seed: int = 0, trust_remote_code: bool = False,
                enforce_eager: bool = False, extra: dict | None = None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``."""
    if tensor_parallel_size < 1:
        raise ConfigError("tensor_parallel_size must be >= 1")
    kw: dict[str, Any] = {"model": model, "tensor_parallel_size": int(tensor_parallel_size), "dtype": dtype,
                          "limit_mm_per_prompt": {"image": int(max_images)}, "seed": int(seed)}
    if max_model_len:
        kw["max_model_len"] = int(max_model_len)
    if gpu_memory_utilization:
        kw["gpu_memory_utilization"] = float(gpu_memory_utilization)
    mm = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    if mm:
        kw["mm_processor_kwargs"] = mm
    if lora:
        kw.update(enable_lora=True, max_lora_rank=int(max_lora_rank), max_loras=1)
    if trust_remote_code:
        kw["trust_remote_code"] = True
    if enforce_eager:
        kw["enforce_eager"] = True
    kw.update(extra or {})
    return kw
