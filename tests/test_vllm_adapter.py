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
from mmrbench.adapters.registry import instantiate as create_model  # noqa: E402
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
    tok = proc.tokenizer
    assert prompt["prompt_token_ids"] == tok(text := tok.decode(prompt["prompt_token_ids"]), add_special_tokens=False)["input_ids"]
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.startswith("<|im_start|>system\nInspect.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert sizes == [[64, 64], [80, 40]]  # smart_resize(50, 90, factor 8, max 4096) = 40 x 80
    text_only = Request("t", [Message("user", "hello")])
    p2, s2 = build_prompt(proc, text_only, None)
    assert "multi_modal_data" not in p2 and s2 == []


class _BosTemplate:
    """A Llama/Gemma-style processor: the template emits BOS, and the tokenizer adds one by default."""

    chat_template = "set"
    BOS = 1

    def apply_chat_template(self, conv, tokenize=False, add_generation_prompt=True):
        return "<s>[INST] " + " ".join(str(p.get("text", "<image>")) for m in conv for p in m["content"]) + " [/INST]"

    def __call__(self, text, add_special_tokens=True):
        ids = [self.BOS] if add_special_tokens else []
        for piece in text.split("<s>"):
            ids += [ord(c) for c in piece] + [self.BOS]
        return {"input_ids": ids[:-1]}


def _vllm_tokenize(prompt, tokenizer):
    """What vLLM does with an engine prompt (0.7.2 InputPreprocessor and 0.33 alike): a text prompt is
    tokenised with the tokenizer's default add_special_tokens (True); token ids are taken as they are."""
    if "prompt_token_ids" in prompt:
        return prompt["prompt_token_ids"]
    return tokenizer(prompt["prompt"])["input_ids"]


def test_rendered_template_is_not_given_a_second_bos():
    proc = _BosTemplate()
    prompt, _ = build_prompt(proc, Request("a", [Message("user", [TextPart("hi")])]), None)
    ids = _vllm_tokenize(prompt, proc)
    assert ids[0] == proc.BOS and ids[1] != proc.BOS and ids.count(proc.BOS) == 1


def test_engine_args():
    kw = engine_args("m", tensor_parallel_size=4, max_model_len=8192, min_pixels=3136, max_pixels=1003520, lora="ad")
    assert kw["limit_mm_per_prompt"] == {"image": 2} and kw["tensor_parallel_size"] == 4
    assert kw["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 1003520}
    assert kw["enable_lora"] is True and kw["max_model_len"] == 8192
    with pytest.raises(ConfigError):
        engine_args("m", tensor_parallel_size=0)


# -- a stand-in vllm module that rejects what the real engine rejects ------------------------------
# Field names and ranges read from the vLLM sources: EngineArgs / LLM.__init__, SamplingParams and
# its _verify_args, LLM.generate's signature and the TextPrompt / TokensPrompt keys of vLLM 0.7.2
# (the floor) and 0.33.0 (the newest checked). Where the two differ the stand-in takes the stricter.
#: EngineArgs fields the adapter may pass (each checked present in vllm 0.7.2 engine/arg_utils.py)
ENGINE_ARGS = {"model", "tensor_parallel_size", "dtype", "limit_mm_per_prompt", "seed", "max_model_len",
               "gpu_memory_utilization", "mm_processor_kwargs", "enable_lora", "max_lora_rank", "max_loras",
               "trust_remote_code", "enforce_eager", "tokenizer", "quantization", "max_num_seqs"}
#: SamplingParams fields (vllm 0.7.2 and 0.33.0 sampling_params.py, the common subset we may use)
SAMPLING_FIELDS = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
                   "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens",
                   "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
                   "spaces_between_special_tokens", "include_stop_str_in_output"}
PROMPT_KEYS = {"prompt": {"prompt", "multi_modal_data", "mm_processor_kwargs"},
               "prompt_token_ids": {"prompt_token_ids", "token_type_ids", "multi_modal_data", "mm_processor_kwargs"}}


class _SamplingParams:
    """vLLM's SamplingParams: unknown keywords are a TypeError (a msgspec Struct), ranges as _verify_args."""

    def __init__(self, **kw):
        unknown = set(kw) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"Unexpected keyword argument {sorted(unknown)[0]!r}")
        self.kwargs = kw
        v = {"n": 1, "repetition_penalty": 1.0, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
             "max_tokens": 16, **kw}
        if not isinstance(v["n"], int) or v["n"] < 1:
            raise ValueError(f"n must be at least 1, got {v['n']}.")
        if not 0.0 < v["repetition_penalty"] <= 2.0:  # 0.7.2; 0.33 only requires > 0
            raise ValueError(f"repetition_penalty must be in (0, 2], got {v['repetition_penalty']}.")
        if not 0.0 <= v["temperature"] <= 2.0:  # 0.7.2: >= 0; 0.33: [0, 2]
            raise ValueError(f"temperature must be in [0, 2], got {v['temperature']}.")
        if not 0.0 < v["top_p"] <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {v['top_p']}.")
        if not isinstance(v["top_k"], int) or v["top_k"] < -1 or v["top_k"] == 0:  # 0 is rejected by 0.7.2
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {v['top_k']}.")
        if not 0.0 <= v["min_p"] <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {v['min_p']}.")
        if v["max_tokens"] is not None and v["max_tokens"] < 1:
            raise ValueError(f"max_tokens must be at least 1, got {v['max_tokens']}.")
        if "seed" in kw and kw["seed"] is not None and not isinstance(kw["seed"], int):
            raise TypeError("seed must be an int")


class _FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:  # vllm.LLM hands **kwargs to EngineArgs(...): a dataclass, so a TypeError
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        if kwargs.get("tensor_parallel_size", 1) < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        self.kwargs = kwargs
        self.calls = []
        _FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, sampling_params, lora_request))
        if isinstance(sampling_params, list) and len(sampling_params) != len(prompts):
            raise ValueError("The lengths of prompts and params must be the same.")
        limit = (self.kwargs.get("limit_mm_per_prompt") or {}).get("image", 1)
        for p in prompts:
            kind = "prompt_token_ids" if "prompt_token_ids" in p else "prompt"
            if kind not in p or set(p) - PROMPT_KEYS[kind]:
                raise TypeError(f"not a TextPrompt or TokensPrompt: keys {sorted(p)}")
            n = len((p.get("multi_modal_data") or {}).get("image", []))
            if n > limit:
                raise ValueError(f"You set image={limit} in limit_mm_per_prompt, but passed {n} items in the same prompt.")
            if kind == "prompt_token_ids" and any(t == 999_999 for t in p["prompt_token_ids"]):
                raise RuntimeError("engine failure")
        return [_out(f"<answer>No.</answer> {len(p['multi_modal_data']['image'])}",
                     "stop" if sp.kwargs["max_tokens"] > 4 else "length", len(p["prompt_token_ids"]), 5)
                for p, sp in zip(prompts, sampling_params)]


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.LLM = _FakeLLM
    mod.SamplingParams = _SamplingParams
    lora_mod = types.ModuleType("vllm.lora")
    req_mod = types.ModuleType("vllm.lora.request")
    req_mod.LoRARequest = lambda name, idx, path: SimpleNamespace(name=name, id=idx, path=path)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora_mod)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", req_mod)
    _FakeLLM.instances.clear()
    return mod


def test_stand_in_rejects_what_vllm_rejects(fake_vllm):
    with pytest.raises(TypeError, match="max_new_tokens"):
        _SamplingParams(max_new_tokens=5)
    for bad in ({"top_p": 0.0}, {"top_k": 0}, {"temperature": -1.0}, {"min_p": 1.5}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            _SamplingParams(**bad)
    with pytest.raises(TypeError, match="gpu_memory"):
        _FakeLLM(model="m", gpu_memory=0.9)
    # every SamplingParams the adapter builds passes the real ranges
    for cfg in (GenerationConfig(temperature=0.0), GenerationConfig(temperature=2.0, top_p=0.1, top_k=5, min_p=1.0),
                GenerationConfig(max_new_tokens=1, seed=3)):
        _SamplingParams(**sampling_params_kwargs(cfg))
    _FakeLLM(**engine_args("m", tensor_parallel_size=2, max_model_len=8, gpu_memory_utilization=0.5, min_pixels=1,
                           max_pixels=2, lora="x", trust_remote_code=True, enforce_eager=True))


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
    # a local folder's content joins the run fingerprint; an adapter path that is not a folder adds nothing
    from mmrbench.weights_identity import folder_digest
    assert d["weights_sha256"] == folder_digest(tiny_qwen_dir) and "lora_sha256" not in d


def test_engine_failure_isolated_per_request(fake_vllm, tiny_qwen_dir):
    m = create_model("vllm", str(tiny_qwen_dir))
    reqs = [_req("a", _img(32, 32, 0), _img(32, 32, 1)),
            Request("b", [Message("user", [ImagePart(_img(32, 32, 2)), TextPart("BOOM")])])]
    real = m.processor.tokenizer

    class Tok:  # the real tokenizer, except that "BOOM" becomes a token the stand-in engine fails on
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": real(text, add_special_tokens=add_special_tokens)["input_ids"]
                    + ([999_999] if "BOOM" in text else [])}
    m.processor.tokenizer = Tok()
    out = m.generate(reqs)
    assert out[0].status == "ok", out[0].error
    assert out[1].status == "error" and "engine failure" in out[1].error
    assert out[1].image_sizes == [[32, 32]]


def test_sent_size_method(fake_vllm, tiny_qwen_dir):
    m = create_model("vllm", str(tiny_qwen_dir), max_pixels=10000)
    assert m.sent_size((90, 50)) == (88, 48) and m.sent_size((64, 64)) == (64, 64)
