"""``vllm`` provider without a GPU: pure request building / output mapping, and the engine class
driven through a stand-in ``vllm`` module that records what it is given."""
from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart  # noqa: E402
from mmrbench.adapters.hf_inputs import load_processor  # noqa: E402
from mmrbench.adapters.qwen_vision import resize_params  # noqa: E402
from mmrbench.adapters.registry import create_model  # noqa: E402
from mmrbench.adapters.vllm_engine import (build_prompt, engine_args, map_output,  # noqa: E402
                                           sampling_params_kwargs)
from mmrbench.errors import ConfigError, MissingExtraError  # noqa: E402


def _img(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _req(rid, ref, query, **cfg):
    return Request(rid, [Message("system", "Inspect."), Message("user", [ImagePart(ref), ImagePart(query), TextPart("Anomaly?")])],
                   GenerationConfig(**{"max_new_tokens": 16, "temperature": 0.0, **cfg}))


def _out(text, reason, n_prompt, n_gen):
    return SimpleNamespace(prompt_token_ids=list(range(n_prompt)),
                           outputs=[SimpleNamespace(text=text, finish_reason=reason, token_ids=list(range(n_gen)))])


def test_missing_vllm_names_the_extra(monkeypatch, tiny_qwen_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(MissingExtraError, match=r"mmrbench\[vllm\]"):
        create_model("vllm", str(tiny_qwen_dir))


def test_sampling_params():
    assert sampling_params_kwargs(GenerationConfig(max_new_tokens=9, temperature=0.0, top_p=0.3)) == {
        "max_tokens": 9, "n": 1, "repetition_penalty": 1.0, "skip_special_tokens": True,
        "temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0}
    s = sampling_params_kwargs(GenerationConfig(max_new_tokens=512, temperature=1.5, min_p=0.1, seed=7))
    assert (s["temperature"], s["min_p"], s["top_p"], s["top_k"], s["seed"], s["max_tokens"]) == (1.5, 0.1, 1.0, -1, 7, 512)


def test_map_output_statuses_and_usage():
    r = map_output(_out("<answer>No.</answer>", "stop", 120, 7), [[28, 28], [56, 28]], 0.5)
    assert (r.text, r.status, r.usage.prompt_tokens, r.usage.completion_tokens) == ("<answer>No.</answer>", "ok", 120, 7)
    assert r.image_sizes == [[28, 28], [56, 28]] and r.latency_s == 0.5
    t = map_output(_out("<think>long", "length", 10, 16), [], None)
    assert t.status == "truncated" and t.text == "<think>long" and t.usage.completion_tokens == 16
    a = map_output(_out("", "abort", 10, 0), [], None)
    assert a.status == "error" and "abort" in a.error
    e = map_output(SimpleNamespace(prompt_token_ids=[1], outputs=[]), [], None)
    assert e.status == "error"


def test_build_prompt_two_images_in_order_and_sizes(tiny_qwen_dir):
    proc = load_processor(tiny_qwen_dir)
    ref, query = _img(64, 64, 0), _img(90, 50, 1)
    prompt, sizes = build_prompt(proc, _req("a", ref, query), resize_params(proc.image_processor))
    assert prompt["multi_modal_data"]["image"][0] is ref and prompt["multi_modal_data"]["image"][1] is query
    text = prompt["prompt"]
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.startswith("<|im_start|>system\nInspect.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert sizes == [[64, 64], [80, 40]]  # smart_resize(50, 90, factor 8, max 4096) = 40 x 80
    text_only = Request("t", [Message("user", "hello")])
    p2, s2 = build_prompt(proc, text_only, None)
    assert "multi_modal_data" not in p2 and s2 == []


def test_engine_args():
    kw = engine_args("m", tensor_parallel_size=4, max_model_len=8192, min_pixels=3136, max_pixels=1003520, lora="ad")
    assert kw["limit_mm_per_prompt"] == {"image": 2} and kw["tensor_parallel_size"] == 4
    assert kw["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 1003520}
    assert kw["enable_lora"] is True and kw["max_model_len"] == 8192
    with pytest.raises(ConfigError):
        engine_args("m", tensor_parallel_size=0)


class _FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        _FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, params, lora_request))
        if any("BOOM" in p["prompt"] for p in prompts):
            raise RuntimeError("engine failure")
        return [_out(f"<answer>No.</answer> {len(p['multi_modal_data']['image'])}", "stop" if sp.kwargs["max_tokens"] > 4 else "length",
                     50, 5) for p, sp in zip(prompts, params)]


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM = _FakeLLM
    mod.SamplingParams = lambda **kw: SimpleNamespace(kwargs=kw)
    lora_mod = types.ModuleType("vllm.lora")
    req_mod = types.ModuleType("vllm.lora.request")
    req_mod.LoRARequest = lambda name, idx, path: SimpleNamespace(name=name, id=idx, path=path)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora_mod)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", req_mod)
    _FakeLLM.instances.clear()
    return mod


def test_engine_class_with_stand_in_module(fake_vllm, tiny_qwen_dir):
    m = create_model("vllm", str(tiny_qwen_dir), tensor_parallel_size=2, max_pixels=10000, lora="/adapters/r1")
    llm = _FakeLLM.instances[-1]
    assert llm.kwargs["model"] == str(tiny_qwen_dir) and llm.kwargs["tensor_parallel_size"] == 2
    assert llm.kwargs["mm_processor_kwargs"] == {"max_pixels": 10000}
    reqs = [_req("a", _img(64, 64, 0), _img(90, 50, 1)),
            _req("b", _img(32, 32, 2), _img(40, 40, 3), max_new_tokens=3, temperature=1.5, min_p=0.1, seed=5)]
    out = m.generate(reqs)
    assert [r.status for r in out] == ["ok", "truncated"]
    assert out[0].image_sizes == [[64, 64], [88, 48]]  # max_pixels 10000 -> 50x90 rounds to 48x88
    prompts, params, lora = llm.calls[-1]
    assert len(prompts) == 2 and params[1].kwargs["seed"] == 5 and params[1].kwargs["min_p"] == 0.1
    assert params[0].kwargs["temperature"] == 0.0 and lora.path == "/adapters/r1"
    d = m.describe()
    assert d["provider"] == "vllm" and d["engine"]["tensor_parallel_size"] == 2 and d["lora"] == "/adapters/r1"


def test_engine_failure_isolated_per_request(fake_vllm, tiny_qwen_dir):
    m = create_model("vllm", str(tiny_qwen_dir))
    reqs = [_req("a", _img(32, 32, 0), _img(32, 32, 1)),
            Request("b", [Message("user", [ImagePart(_img(32, 32, 2)), TextPart("BOOM")])])]
    out = m.generate(reqs)
    assert out[0].status == "ok" and out[1].status == "error" and "engine failure" in out[1].error
    assert out[1].image_sizes == [[32, 32]]


def test_sent_size_method(fake_vllm, tiny_qwen_dir):
    m = create_model("vllm", str(tiny_qwen_dir), max_pixels=10000)
    assert m.sent_size((90, 50)) == (88, 48) and m.sent_size((64, 64)) == (64, 64)
