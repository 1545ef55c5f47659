"""``lmdeploy`` provider without a GPU: pure message building / output mapping / frame sizes, and
the pipeline class driven through a stand-in ``lmdeploy`` module."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart
from mmrbench.adapters.lmdeploy_engine import (build_messages, gen_config_kwargs, is_qwen_vl, known_fields,
                                               map_response, sent_sizes)
from mmrbench.adapters.qwen_vision import qwen_vl_utils_resize, resize_params_from_config
from mmrbench.adapters.registry import create_model
from mmrbench.errors import ConfigError, MissingExtraError


def _img(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _req(rid, ref, query, **cfg):
    return Request(rid, [Message("system", "Inspect."), Message("user", [ImagePart(ref), ImagePart(query), TextPart("Anomaly?")])],
                   GenerationConfig(**{"max_new_tokens": 16, "temperature": 0.0, **cfg}))


def _decode(url):
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_missing_lmdeploy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdeploy", None)
    with pytest.raises(MissingExtraError, match=r"mmrbench\[lmdeploy\]"):
        create_model("lmdeploy", "OpenGVLab/InternVL3-8B")


def test_messages_lossless_images_in_order():
    ref, query = _img(30, 20, 0), _img(25, 35, 1)
    msgs = build_messages(_req("a", ref, query), min_pixels=3136, max_pixels=200704)
    assert msgs[0] == {"role": "system", "content": "Inspect."}
    parts = msgs[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert np.array_equal(np.asarray(_decode(parts[0]["image_url"]["url"])), np.asarray(ref))
    assert np.array_equal(np.asarray(_decode(parts[1]["image_url"]["url"])), np.asarray(query))
    assert parts[1]["image_url"]["max_pixels"] == 200704 and parts[1]["image_url"]["min_pixels"] == 3136
    assert "max_pixels" not in build_messages(_req("a", ref, query))[1]["content"][0]["image_url"]


def test_gen_config():
    g = gen_config_kwargs(GenerationConfig(max_new_tokens=5, temperature=0.0, seed=1))
    assert g["do_sample"] is False and g["top_k"] == 1 and g["random_seed"] == 1 and g["max_new_tokens"] == 5
    s = gen_config_kwargs(GenerationConfig(max_new_tokens=512, temperature=1.5, min_p=0.1))
    assert (s["do_sample"], s["temperature"], s["min_p"], s["top_k"], s["top_p"]) == (True, 1.5, 0.1, 0, 1.0)
    with pytest.raises(ConfigError):
        gen_config_kwargs(GenerationConfig(temperature=2.5))

    @dataclasses.dataclass
    class OldGenConfig:  # an LMDeploy release without do_sample / min_p
        max_new_tokens: int = 512
        top_k: int = 40
    assert known_fields(OldGenConfig, g) == {"max_new_tokens": 5, "top_k": 1}


def test_map_response():
    ok = map_response(SimpleNamespace(text="<answer>No.</answer>", finish_reason="stop", input_token_len=300,
                                      generate_token_len=9), [[28, 28]], 1.0)
    assert (ok.status, ok.usage.prompt_tokens, ok.usage.completion_tokens, ok.image_sizes) == ("ok", 300, 9, [[28, 28]])
    assert map_response(SimpleNamespace(text="x", finish_reason="length", input_token_len=1, generate_token_len=4),
                        [], None).status == "truncated"
    err = map_response(SimpleNamespace(text="", finish_reason=None, input_token_len=1, generate_token_len=0), [], None)
    assert err.status == "error"
    assert map_response(None, [], None).status == "error"


def test_qwen_frame_two_stage_hand_computed(tmp_path):
    # qwen-vl-utils then the processor; 1000x750 with the defaults: 36x27 patches of 28 -> 1008x756 both times
    assert sent_sizes([_img(1000, 750, 0)], True, None, None, None) == [[1008, 756]]
    # a tiny image: qwen-vl-utils clamps sides to >= 28 (28x28 = 784 < 3136 -> scaled: sqrt(3136/200)=3.96,
    # ceil(10*3.96/28)=2, ceil(20*3.96/28)=3 -> 84x56); the processor keeps 84x56
    assert qwen_vl_utils_resize(10, 20) == (56, 84)
    assert sent_sizes([_img(20, 10, 0)], True, None, None, None) == [[84, 56]]
    # per-image max_pixels 200704 first: 2000x1500 -> beta=sqrt(3e6/200704)=3.866 -> floor(13.85)=13, floor(18.47)=18
    assert sent_sizes([_img(2000, 1500, 0)], True, None, 200704, None) == [[504, 364]]
    # not a Qwen-VL model: sizes are the originals
    assert sent_sizes([_img(2000, 1500, 0)], False, None, None, None) == [[2000, 1500]]
    assert resize_params_from_config({"min_pixels": 100, "max_pixels": 2000, "patch_size": 14, "merge_size": 2}) == \
        {"factor": 28, "min_pixels": 100, "max_pixels": 2000}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert is_qwen_vl(str(tmp_path)) and is_qwen_vl("Qwen/Qwen2.5-VL-7B-Instruct")
    assert not is_qwen_vl("OpenGVLab/InternVL3-8B")


@dataclasses.dataclass
class _GenConfig:
    n: int = 1
    max_new_tokens: int = 512
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 50
    min_p: float = 0.0
    temperature: float = 0.8
    repetition_penalty: float = 1.0
    random_seed: int | None = None
    skip_special_tokens: bool = True


class _Pipe:
    def __init__(self, model, backend_config):
        self.model, self.backend_config, self.calls = model, backend_config, []

    def __call__(self, prompts, gen_config=None, adapter_name=None):
        self.calls.append((prompts, gen_config, adapter_name))
        if any("BOOM!" in json.dumps(p) for p in prompts):  # "!" never occurs in base64
            raise RuntimeError("engine failure")
        return [SimpleNamespace(text="<answer>No.</answer>", finish_reason="stop" if g.max_new_tokens > 4 else "length",
                                input_token_len=100, generate_token_len=3) for g in gen_config]


@pytest.fixture
def fake_lmdeploy(monkeypatch):
    mod = types.ModuleType("lmdeploy")
    mod.GenerationConfig = _GenConfig
    mod.TurbomindEngineConfig = lambda **kw: SimpleNamespace(kind="turbomind", **kw)
    mod.PytorchEngineConfig = lambda **kw: SimpleNamespace(kind="pytorch", **kw)
    mod.pipelines = []

    def pipeline(model, backend_config=None):
        p = _Pipe(model, backend_config)
        mod.pipelines.append(p)
        return p
    mod.pipeline = pipeline
    monkeypatch.setitem(sys.modules, "lmdeploy", mod)
    return mod


def test_pipeline_class_with_stand_in(fake_lmdeploy):
    m = create_model("lmdeploy", "Qwen/Qwen2.5-VL-72B-Instruct", tp=4, max_pixels=200704)
    pipe = fake_lmdeploy.pipelines[-1]
    assert pipe.backend_config.kind == "pytorch" and pipe.backend_config.tp == 4  # Qwen-VL runs on PyTorch engine
    out = m.generate([_req("a", _img(2000, 1500, 0), _img(1000, 750, 1)),
                      _req("b", _img(64, 64, 2), _img(64, 64, 3), max_new_tokens=3, temperature=1.5, min_p=0.1)])
    assert [r.status for r in out] == ["ok", "truncated"]
    # 1000x750 with max 200704: beta = sqrt(750000 / 200704) = 1.933 -> floor(13.86) = 13, floor(18.48) = 18
    assert out[0].image_sizes == [[504, 364], [504, 364]]
    prompts, configs, adapter = pipe.calls[-1]
    assert configs[1].do_sample is True and configs[1].min_p == 0.1 and configs[0].top_k == 1 and adapter is None
    assert m.describe()["backend"] == "pytorch"
    t = create_model("lmdeploy", "OpenGVLab/InternVL3-8B")
    assert fake_lmdeploy.pipelines[-1].backend_config.kind == "turbomind"
    [r] = t.generate([_req("c", _img(64, 48, 0), _img(80, 60, 1))])
    assert r.image_sizes == [[64, 48], [80, 60]]
    with pytest.raises(ConfigError):
        create_model("lmdeploy", "OpenGVLab/InternVL3-8B", backend="turbomind", lora="/x")
    with pytest.raises(ConfigError):
        create_model("lmdeploy", "m", backend="tensorrt")


def test_failure_isolated(fake_lmdeploy):
    m = create_model("lmdeploy", "OpenGVLab/InternVL3-8B")
    out = m.generate([_req("a", _img(32, 32, 0), _img(32, 32, 1)),
                      Request("b", [Message("user", [TextPart("BOOM!")])])])
    assert out[0].status == "ok" and out[1].status == "error" and "engine failure" in out[1].error


def test_sent_size_method(fake_lmdeploy):
    q = create_model("lmdeploy", "Qwen/Qwen2.5-VL-7B-Instruct", max_pixels=200704)
    assert q.sent_size((1000, 750)) == (504, 364)
    assert create_model("lmdeploy", "OpenGVLab/InternVL3-8B").sent_size((1000, 750)) == (1000, 750)
