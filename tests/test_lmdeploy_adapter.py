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
from mmrbench.adapters.registry import instantiate as create_model
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
    proc = {"factor": 28, "min_pixels": 3136, "max_pixels": 1003520}
    old = (0, 15)
    assert sent_sizes([_img(1000, 750, 0)], True, None, None, proc, old) == [[1008, 756]]
    # a tiny image: qwen-vl-utils clamps sides to >= 28 (28x28 = 784 < 3136 -> scaled: sqrt(3136/200)=3.96,
    # ceil(10*3.96/28)=2, ceil(20*3.96/28)=3 -> 84x56); the processor keeps 84x56
    assert qwen_vl_utils_resize(10, 20) == (56, 84)
    assert sent_sizes([_img(20, 10, 0)], True, None, None, proc, old) == [[84, 56]]
    # per-image max_pixels 200704 first: 2000x1500 -> beta=sqrt(3e6/200704)=3.866 -> floor(13.85)=13, floor(18.47)=18
    assert sent_sizes([_img(2000, 1500, 0)], True, None, 200704, proc, old) == [[504, 364]]
    # not a Qwen-VL model: sizes are the originals
    assert sent_sizes([_img(2000, 1500, 0)], False, None, None, None) == [[2000, 1500]]
    assert resize_params_from_config({"min_pixels": 100, "max_pixels": 2000, "patch_size": 14, "merge_size": 2}) == \
        {"factor": 28, "min_pixels": 100, "max_pixels": 2000}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert is_qwen_vl(str(tmp_path)) and is_qwen_vl("Qwen/Qwen2.5-VL-7B-Instruct")
    assert not is_qwen_vl("OpenGVLab/InternVL3-8B")


# -- a stand-in lmdeploy module that rejects what the real one rejects -------------------------------
# Field names, defaults and checks copied as facts from lmdeploy 0.16.0 messages.py (GenerationConfig,
# TurbomindEngineConfig, PytorchEngineConfig and their __post_init__ asserts) and the Response fields
# finish_reason / error_code / error_message that 0.16 added; 0.7.2 (the floor) has the same checks.
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
    ignore_eos: bool = False
    random_seed: int | None = None
    stop_words: list | None = None
    bad_words: list | None = None
    min_new_tokens: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logprobs: int | None = None

    def __post_init__(self):
        assert type(self.n) is int and self.n > 0, "n is not a positive integer"
        assert self.top_p >= 0 and self.top_p <= 1
        assert self.top_k >= 0, "top_k can not be a negative integer"
        assert self.temperature >= 0 and self.temperature <= 2
        assert 0 <= self.min_p <= 1, f"min_p should be in range [0, 1], but found {self.min_p}"


@dataclasses.dataclass
class _EngineConfig:
    kind: str = "pytorch"
    dtype: str = "auto"
    tp: int = 1
    session_len: int | None = None
    cache_max_entry_count: float = 0.8
    adapters: dict | None = None

    def __post_init__(self):
        assert self.dtype in ["auto", "float16", "bfloat16"]
        assert self.tp >= 1, "tp must be a positive integer"
        assert 0 < self.cache_max_entry_count < 1, "invalid cache_max_entry_count"


class _Pipe:
    def __init__(self, model, backend_config, fail_first=0):
        self.model, self.backend_config, self.calls = model, backend_config, []
        self.fail_first = fail_first

    def __call__(self, prompts, gen_config=None, adapter_name=None):
        self.calls.append((prompts, gen_config, adapter_name))
        assert isinstance(gen_config, list) and len(gen_config) == len(prompts)
        for msgs in prompts:
            for m in msgs:
                assert set(m) == {"role", "content"} and m["role"] in ("system", "user", "assistant")
                for part in (m["content"] if isinstance(m["content"], list) else []):
                    if part["type"] == "image_url":
                        assert part["image_url"]["url"].startswith("data:image/")
                        assert set(part["image_url"]) <= {"url", "min_pixels", "max_pixels"}
                    else:
                        assert part["type"] == "text" and isinstance(part["text"], str)
        if any("BOOM!" in json.dumps(p) for p in prompts):  # "!" never occurs in base64
            raise RuntimeError("engine failure")
        out = []
        for p, g in zip(prompts, gen_config):
            if "OOM!" in json.dumps(p) or self.fail_first > 0:  # 0.16: a failed request, not an exception
                self.fail_first -= 1
                out.append(SimpleNamespace(text="partial", finish_reason="error", input_token_len=100,
                                           generate_token_len=0, error_code="INTERNAL_ENGINE_ERROR",
                                           error_message="CUDA out of memory. Tried to allocate 2.00 GiB"))
                continue
            out.append(SimpleNamespace(text="<answer>No.</answer>", finish_reason="stop" if g.max_new_tokens > 4 else "length",
                                       input_token_len=100, generate_token_len=3, error_code=None, error_message=None))
        return out


#: the released Qwen2.5-VL preprocessor_config.json's resize fields (Qwen/Qwen2.5-VL-7B-Instruct on the hub)
QWEN25_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                       "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                       "image_std": [0.26862954, 0.26130258, 0.27577711],
                       "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding Qwen2.5-VL's preprocessor_config.json, the hub offline."""
    hub = pytest.importorskip("huggingface_hub.constants")
    sha = "b" * 40
    for repo in ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-72B-Instruct"):
        root = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(sha)
        (root / "snapshots" / sha).mkdir(parents=True)
        (root / "snapshots" / sha / "preprocessor_config.json").write_text(json.dumps(QWEN25_PREPROCESSOR))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def _fake_module(monkeypatch, version):
    mod = types.ModuleType("lmdeploy")
    mod.__version__ = version
    mod.GenerationConfig = _GenConfig
    mod.TurbomindEngineConfig = lambda **kw: _EngineConfig(kind="turbomind", **kw)
    mod.PytorchEngineConfig = lambda **kw: _EngineConfig(kind="pytorch", **kw)
    mod.pipelines = []
    mod.fail_first = 0

    def pipeline(model, backend_config=None):
        p = _Pipe(model, backend_config, mod.fail_first)
        mod.pipelines.append(p)
        return p
    mod.pipeline = pipeline
    monkeypatch.setitem(sys.modules, "lmdeploy", mod)
    return mod


@pytest.fixture
def fake_lmdeploy(monkeypatch, hub_cache):
    return _fake_module(monkeypatch, "0.16.0")


@pytest.fixture
def old_lmdeploy(monkeypatch, hub_cache):
    return _fake_module(monkeypatch, "0.15.0")


def test_stand_in_rejects_what_lmdeploy_rejects():
    with pytest.raises(TypeError):
        _GenConfig(max_tokens=5)  # vLLM's name, not LMDeploy's
    for bad in ({"top_p": 1.5}, {"top_k": -1}, {"temperature": 2.5}, {"min_p": 2.0}, {"n": 0}):
        with pytest.raises(AssertionError):
            _GenConfig(**bad)
    with pytest.raises(AssertionError):
        _EngineConfig(dtype="float32")
    for cfg in (GenerationConfig(temperature=0.0, seed=1), GenerationConfig(temperature=2.0, top_p=0.5, top_k=3, min_p=1.0)):
        _GenConfig(**known_fields(_GenConfig, gen_config_kwargs(cfg)))


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
    assert m.describe()["backend"] == "pytorch" and m.describe()["lmdeploy_version"] == "0.16"
    assert "weights_sha256" not in m.describe()  # a hub id: its name is the identity
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


# -- issue #16 item 4 ---------------------------------------------------------------------------------
def _processor_size(w, h, **limits):
    """(width, height) the real transformers Qwen2-VL image processor gives an image of w x h."""
    tr = pytest.importorskip("transformers")
    cls = getattr(tr, "Qwen2VLImageProcessorPil", None) or tr.Qwen2VLImageProcessor
    proc = cls(min_pixels=QWEN25_PREPROCESSOR["min_pixels"], max_pixels=QWEN25_PREPROCESSOR["max_pixels"],
               patch_size=14, merge_size=2)
    if limits:
        proc = cls(**{"min_pixels": QWEN25_PREPROCESSOR["min_pixels"], "max_pixels": QWEN25_PREPROCESSOR["max_pixels"],
                      **limits}, patch_size=14, merge_size=2)
    [[_, gh, gw]] = proc(images=[Image.new("RGB", (w, h))], return_tensors="np")["image_grid_thw"].tolist()
    return gw * 14, gh * 14


@pytest.mark.slow
def test_hub_id_size_equals_the_real_processors(fake_lmdeploy):
    """A hub id reads the real preprocessor_config.json (12,845,056 max pixels for Qwen2.5-VL): a
    2000x1500 image goes in as 1988x1512, not the 1148x868 of the old 1,003,520 fallback."""
    m = create_model("lmdeploy", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert m.sent_size((2000, 1500)) == _processor_size(2000, 1500) == (1988, 1512)
    assert m.describe()["image_resize"]["processor"]["max_pixels"] == 12845056
    # per-image limits override the config's in 0.16's single resize
    m2 = create_model("lmdeploy", "Qwen/Qwen2.5-VL-7B-Instruct", max_pixels=200704)
    assert m2.sent_size((2000, 1500)) == _processor_size(2000, 1500, max_pixels=200704)


def test_before_016_qwen_vl_utils_then_the_processor(old_lmdeploy):
    m = create_model("lmdeploy", "Qwen/Qwen2.5-VL-7B-Instruct", max_pixels=200704)
    # qwen-vl-utils first (per-image max 200704): 2000x1500 -> 504x364; the processor keeps it
    assert m.sent_size((2000, 1500)) == (504, 364)
    assert m.describe()["image_resize"]["stages"] == "qwen-vl-utils+processor"


def test_unreadable_processor_config_is_an_error_not_a_guess(fake_lmdeploy):
    with pytest.raises(ConfigError, match="preprocessor_config.json.*processor_max_pixels"):
        create_model("lmdeploy", "Qwen/Qwen2-VL-2B-Instruct")  # not in the (offline) cache
    m = create_model("lmdeploy", "Qwen/Qwen2-VL-2B-Instruct", processor_min_pixels=3136, processor_max_pixels=12845056)
    assert m.sent_size((2000, 1500)) == (1988, 1512)


def test_local_folder_reads_its_config(fake_lmdeploy, tmp_path):
    d = tmp_path / "qwen-local"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        create_model("lmdeploy", str(d))
    (d / "preprocessor_config.json").write_text(json.dumps({**QWEN25_PREPROCESSOR, "max_pixels": 1003520}))
    m = create_model("lmdeploy", str(d))
    assert m.sent_size((2000, 1500)) == _processor_size(2000, 1500, max_pixels=1003520)
    before = m.describe()["weights_sha256"]  # a local folder: its content is in the run fingerprint
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl", "note": "retrained"}))
    assert create_model("lmdeploy", str(d)).describe()["weights_sha256"] != before


def test_finish_reason_error_is_recorded_and_retried_once(fake_lmdeploy):
    fake_lmdeploy.fail_first = 1  # the engine fails the first request once
    m = create_model("lmdeploy", "OpenGVLab/InternVL3-8B")
    out = m.generate([_req("a", _img(32, 32, 0), _img(32, 32, 1)), _req("b", _img(32, 32, 2), _img(32, 32, 3))])
    assert [r.status for r in out] == ["ok", "ok"] and out[0].attempts == 2
    [r] = m.generate([Request("c", [Message("user", [TextPart("OOM!")])])])
    assert r.status == "error" and r.text is None
    assert r.error == ("LMDeploy finish_reason='error' (INTERNAL_ENGINE_ERROR): "
                       "CUDA out of memory. Tried to allocate 2.00 GiB")
    assert len(fake_lmdeploy.pipelines[-1].calls) == 1 + 1 + 2  # 2 prompts, 1 retry; then 1 + 1 retry


def test_out_of_range_sampling_is_an_error_per_request(fake_lmdeploy):
    m = create_model("lmdeploy", "OpenGVLab/InternVL3-8B")
    [r] = m.generate([_req("a", _img(32, 32, 0), _img(32, 32, 1), temperature=1.0, top_p=1.5)])
    assert r.status == "error"
