"""``lmdeploy`` provider: LMDeploy's ``pipeline`` in-process (GPU; optional extra ``mmrbench[lmdeploy]``).

Requests go to the pipeline as OpenAI-style messages (text parts and ``image_url`` parts carrying
lossless PNG data URLs, reference first, query second), so LMDeploy applies the model's own chat
template. ``backend`` picks TurboMind (``TurbomindEngineConfig(tp=...)``) or the PyTorch engine
(``PytorchEngineConfig``; LMDeploy runs Qwen2-VL/Qwen2.5-VL only there, and LoRA adapters). Stop
status comes from ``Response.finish_reason`` (``length`` -> truncated), usage from
``input_token_len`` / ``generate_token_len``.

Image frame for Qwen-VL models depends on the LMDeploy version (read in ``lmdeploy/vl/model/qwen2.py``):

* up to 0.15: ``qwen-vl-utils`` resizes first (with the per-image ``min_pixels`` / ``max_pixels`` we
  send, or its own defaults 3136 / 12,845,056), then the model's image processor resizes again
  with the limits of its ``preprocessor_config.json``;
* from 0.16: no ``qwen-vl-utils``; the image processor resizes once, the per-image limits
  overriding the config's.

The processor limits are read from the model's real ``preprocessor_config.json``: the local folder,
or for a hub id the file in the Hugging Face cache (downloaded when the hub is reachable). If it
cannot be read the provider refuses to start (a guessed limit maps pixel boxes back wrongly: the
released Qwen2.5-VL config says 12,845,056 where older defaults say 1,003,520), unless
``processor_min_pixels`` / ``processor_max_pixels`` are given. The sizes are computed, not read from
the engine: where exact frames matter most, the ``hf`` and ``vllm`` providers take them from the
processor itself.

Failures: from 0.16 a failing request comes back with ``finish_reason='error'`` and an
``error_message`` instead of raising; both forms are recorded with the engine's message, and the
failed requests are retried once each, alone, as exceptions are.
"""
from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any, Sequence

from mmrbench.adapters.base import GenerationConfig, ImagePart, ModelAPI, Request, Response, TextPart, Usage, as_status
from mmrbench.errors import ConfigError, require

BACKENDS = ("auto", "turbomind", "pytorch")


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def build_messages(request: Request, min_pixels: int | None = None, max_pixels: int | None = None) -> list[dict[str, Any]]:
    """OpenAI-style messages for ``pipeline``; Qwen-VL pixel bounds travel inside each image part."""
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if isinstance(p, ImagePart):
                url: dict[str, Any] = {"url": png_data_url(p.image)}
                if min_pixels is not None:
                    url["min_pixels"] = int(min_pixels)
                if max_pixels is not None:
                    url["max_pixels"] = int(max_pixels)
                parts.append({"type": "image_url", "image_url": url})
            elif isinstance(p, TextPart):
                parts.append({"type": "text", "text": p.text})
        if m.role != "user" and all(x["type"] == "text" for x in parts):
            out.append({"role": m.role, "content": "".join(x["text"] for x in parts)})
        else:
            out.append({"role": m.role, "content": parts})
    return out


def gen_config_kwargs(cfg: GenerationConfig) -> dict[str, Any]:
    """``lmdeploy.GenerationConfig`` keyword arguments, every knob explicit (LMDeploy's own defaults
    are top_k=50, temperature 0.8). ``top_k=0`` means no top-k filter in LMDeploy's samplers."""
    kw: dict[str, Any] = {"max_new_tokens": int(cfg.max_new_tokens), "repetition_penalty": 1.0,
                          "skip_special_tokens": True, "n": 1}
    if cfg.greedy:
        kw.update(do_sample=False, top_k=1, top_p=1.0, min_p=0.0, temperature=1.0)
    else:
        temperature = float(cfg.temperature or 0.0)  # not greedy: a positive number
        if not 0 < temperature <= 2:
            raise ConfigError(f"LMDeploy accepts temperature in (0, 2], got {cfg.temperature}")
        kw.update(do_sample=True, temperature=temperature,
                  top_p=float(cfg.top_p) if cfg.top_p is not None else 1.0,
                  top_k=int(cfg.top_k) if cfg.top_k else 0,
                  min_p=float(cfg.min_p) if cfg.min_p else 0.0)
    if cfg.seed is not None:
        kw["random_seed"] = int(cfg.seed)
    return kw


def map_response(resp: Any, sizes: list[list[int]], latency_s: float | None) -> Response:
    """An LMDeploy ``Response`` -> :class:`Response` (``finish_reason='error'`` with ``error_code`` /
    ``error_message`` is LMDeploy 0.16's way of reporting a failed request)."""
    if resp is None:
        return Response(text=None, status="error", error="LMDeploy returned no response", image_sizes=sizes)
    reason = getattr(resp, "finish_reason", None)
    usage = Usage(int(getattr(resp, "input_token_len", 0) or 0), int(getattr(resp, "generate_token_len", 0) or 0))
    text = getattr(resp, "text", None)
    if reason == "length":
        status, err = "truncated", None
    elif reason == "stop":
        status, err = "ok", None
    else:
        status, err = "error", f"LMDeploy finish_reason={reason!r}"
        code, message = getattr(resp, "error_code", None), getattr(resp, "error_message", None)
        if code:
            err += f" ({code})"
        if message:
            err += ": " + " ".join(str(message).split())[:400]
        text = None  # a failed request's partial text is not an answer
    return Response(text=text, status=as_status(status), error=err, usage=usage, latency_s=latency_s,
                    image_sizes=sizes, retryable=status == "error")


def known_fields(cls: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """Drop keys an older LMDeploy's dataclass does not have (``do_sample``, ``min_p`` are recent;
    greedy still holds through ``top_k=1``)."""
    import dataclasses

    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in kw.items() if k in names}
    return kw


def is_qwen_vl(model: str) -> bool:
    cfg = Path(model) / "config.json"
    if cfg.is_file():
        try:
            d = json.loads(cfg.read_text())
        except ValueError:
            d = {}
        return d.get("model_type") in ("qwen2_vl", "qwen2_5_vl")
    low = model.lower()
    return "qwen2" in low and "vl" in low


#: the first LMDeploy release whose Qwen2-VL preprocessing no longer calls qwen-vl-utils
SINGLE_STAGE_FROM = (0, 16)


def version_tuple(version: str | None) -> tuple[int, int]:
    import re
    m = re.match(r"^\s*(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def read_preprocessor_config(model: str) -> dict[str, Any]:
    """The model's ``preprocessor_config.json``: a local folder's, or a hub id's from the Hugging Face
    cache (downloaded when the hub is reachable). Raises ConfigError when it cannot be read."""
    cfg = Path(model) / "preprocessor_config.json"
    where = str(cfg)
    try:
        if Path(model).is_dir():
            if not cfg.is_file():
                raise ConfigError(f"{cfg}: file not found")
            text = cfg.read_text(encoding="utf-8")
        else:
            hub = require("huggingface_hub", "hf", "reading a hub model's preprocessor_config.json")
            where = f"{model} (Hugging Face hub): preprocessor_config.json"
            try:
                path = hub.hf_hub_download(repo_id=model, filename="preprocessor_config.json")
            except Exception as exc:  # noqa: BLE001 - offline, gated, missing: one clear line
                raise ConfigError(f"{where}: cannot be read ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]})") from None
            text = Path(path).read_text(encoding="utf-8")
        d = json.loads(text)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot be read ({exc})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: not a JSON object")
    return d


def processor_resize(model: str, min_pixels: int | None = None, max_pixels: int | None = None) -> dict[str, int]:
    """The image processor's own resize limits (see the module docstring); explicit values win and
    spare reading the config."""
    from mmrbench.adapters.qwen_vision import resize_params_from_config

    if min_pixels is not None and max_pixels is not None:
        return {"factor": 28, "min_pixels": int(min_pixels), "max_pixels": int(max_pixels)}
    try:
        d = read_preprocessor_config(model)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; LMDeploy's image frame for this Qwen-VL model depends on it: pass a local "
                          f"model folder, make the file reachable, or set both processor_min_pixels and "
                          f"processor_max_pixels") from None
    params = resize_params_from_config(d)
    if min_pixels is not None:
        params["min_pixels"] = int(min_pixels)
    if max_pixels is not None:
        params["max_pixels"] = int(max_pixels)
    return params


def sent_sizes(images, qwen: bool, min_pixels: int | None, max_pixels: int | None,
               proc: dict[str, int] | None, version: tuple[int, int] = (0, 15)) -> list[list[int]]:
    """(width, height) of each image as the model sees it (see the module docstring). ``version`` is
    LMDeploy's (major, minor); callers that do not know it get the two-stage frame of <= 0.15 (the
    provider always passes the installed version; ``describe()["image_resize"]["stages"]`` says which)."""
    from mmrbench.adapters.qwen_vision import (QWEN_VL_UTILS_MAX_PIXELS, QWEN_VL_UTILS_MIN_PIXELS,
                                               qwen_vl_utils_resize, smart_resize)

    out = []
    for im in images:
        w, h = im.size
        if qwen:
            if proc is None:
                raise ConfigError("the image processor's resize limits are unknown")
            if version >= SINGLE_STAGE_FROM:  # one resize, per-image limits override the config's
                h, w = smart_resize(h, w, proc["factor"], min_pixels or proc["min_pixels"],
                                    max_pixels or proc["max_pixels"])
            else:
                h, w = qwen_vl_utils_resize(h, w, 28, min_pixels or QWEN_VL_UTILS_MIN_PIXELS,
                                            max_pixels or QWEN_VL_UTILS_MAX_PIXELS)
                h, w = smart_resize(h, w, proc["factor"], proc["min_pixels"], proc["max_pixels"])
        out.append([int(w), int(h)])
    return out


def backend_config(lmdeploy: Any, backend: str, *, tp: int, session_len: int | None,
                   cache_max_entry_count: float | None, dtype: str, lora: str | None):
    kw: dict[str, Any] = {"tp": int(tp), "dtype": dtype}
    if session_len:
        kw["session_len"] = int(session_len)
    if cache_max_entry_count:
        kw["cache_max_entry_count"] = float(cache_max_entry_count)
    if backend == "pytorch":
        if lora:
            kw["adapters"] = {"lora": str(lora)}
        return lmdeploy.PytorchEngineConfig(**kw)
    if lora:
        raise ConfigError("LoRA adapters need backend='pytorch' in LMDeploy")
    return lmdeploy.TurbomindEngineConfig(**kw)


class LMDeployModel(ModelAPI):
    provider = "lmdeploy"
    convention = "pixel"
    max_concurrency = 1
    batch_size = 32

    def __init__(self, model: str, *, convention: str | None = None, batch_size: int | None = None,
                 sampling: GenerationConfig | None = None, backend: str = "auto", tp: int = 1,
                 tensor_parallel_size: int | None = None, session_len: int | None = None,
                 cache_max_entry_count: float | None = None, dtype: str = "auto",
                 min_pixels: int | None = None, max_pixels: int | None = None, qwen_resize: bool | None = None,
                 processor_min_pixels: int | None = None, processor_max_pixels: int | None = None,
                 lora: str | None = None, **_ignored: Any):
        super().__init__(model)
        lmdeploy = require("lmdeploy", "lmdeploy", "the lmdeploy provider")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown LMDeploy backend '{backend}' (known: {', '.join(BACKENDS)})")
        if convention:
            self.set_convention(convention)
        if batch_size:
            self.batch_size = int(batch_size)
        self.sampling = sampling or GenerationConfig()
        self.qwen = is_qwen_vl(model) if qwen_resize is None else bool(qwen_resize)
        if backend == "auto":
            backend = "pytorch" if (self.qwen or lora) else "turbomind"
        self.backend = backend
        self.tp = int(tensor_parallel_size or tp)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.lora = lora
        self.version = version_tuple(getattr(lmdeploy, "__version__", None))
        self.proc_resize = (processor_resize(model, processor_min_pixels, processor_max_pixels)
                            if self.qwen else None)
        self._lmdeploy = lmdeploy
        cfg = backend_config(lmdeploy, backend, tp=self.tp, session_len=session_len,
                             cache_max_entry_count=cache_max_entry_count, dtype=dtype, lora=lora)
        self.pipe = lmdeploy.pipeline(model, backend_config=cfg)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"backend": self.backend, "tp": self.tp})
        if self.qwen:
            d["image_resize"] = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels,
                                 "processor": self.proc_resize,
                                 "stages": "processor" if self.version >= SINGLE_STAGE_FROM
                                 else "qwen-vl-utils+processor"}
        d["lmdeploy_version"] = ".".join(map(str, self.version))
        if self.lora:
            d["lora"] = str(self.lora)
        d.update(self.local_weights(self.model, self.lora))
        return d

    def sent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) at which an image of ``size`` reaches the model (computed, see the module doc)."""
        from types import SimpleNamespace

        [[w, h]] = sent_sizes([SimpleNamespace(size=(int(size[0]), int(size[1])))], self.qwen, self.min_pixels,
                              self.max_pixels, self.proc_resize, self.version)
        return w, h

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        items = []
        for r in requests:
            items.append((build_messages(r, self.min_pixels if self.qwen else None, self.max_pixels if self.qwen else None),
                          sent_sizes(r.images, self.qwen, self.min_pixels, self.max_pixels, self.proc_resize,
                                     self.version),
                          r.config))
        return self._run(items)

    def _run(self, items) -> list[Response]:
        """One pass, then each request the engine reported as failed (``finish_reason='error'``) once
        more, alone; a request that raised has already been retried alone inside the pass."""
        out = self._run_once(items)
        for i, r in enumerate(out):
            if r.status == "error" and r.retryable:
                [again] = self._run_once([items[i]])
                again.attempts = 2
                again.retryable = False
                out[i] = again
        return out

    def _run_once(self, items) -> list[Response]:
        try:
            configs = [self._lmdeploy.GenerationConfig(**known_fields(self._lmdeploy.GenerationConfig,
                                                                      gen_config_kwargs(c))) for _, _, c in items]
        except (ConfigError, AssertionError, TypeError, ValueError) as exc:  # LMDeploy checks ranges with assert
            msg = str(exc) or f"{type(exc).__name__} in lmdeploy.GenerationConfig"
            return [Response(text=None, status="error", error=msg, image_sizes=s) for _, s, _ in items]
        kw: dict[str, Any] = {"gen_config": configs}
        if self.lora:
            kw["adapter_name"] = "lora"
        t0 = time.perf_counter()
        try:
            outs = self.pipe([m for m, _, _ in items], **kw)
        except Exception as exc:  # noqa: BLE001
            if len(items) > 1:
                return [r for it in items for r in self._run_once([it])]
            return [Response(text=None, status="error", error=f"{type(exc).__name__}: {exc}"[:500],
                             image_sizes=items[0][1])]
        elapsed = time.perf_counter() - t0
        if not isinstance(outs, list):
            outs = [outs]
        if len(outs) != len(items):
            return [Response(text=None, status="error", error=f"LMDeploy returned {len(outs)} responses for "
                             f"{len(items)} prompts", image_sizes=s) for _, s, _ in items]
        return [map_response(o, s, elapsed) for o, (_, s, _) in zip(outs, items)]
