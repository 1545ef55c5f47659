"""``hf`` provider on the tiny Qwen2.5-VL saved to a temporary folder and loaded through
from_pretrained, plus its pure helpers (sampling, stop status, special tokens, resize frame)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart  # noqa: E402
from mmrbench.adapters.hf_local import (config_key, finish, group_sizes, sampling_kwargs,  # noqa: E402
                                        special_ids_to_drop)
from mmrbench.adapters.qwen_vision import smart_resize  # noqa: E402
from mmrbench.adapters.registry import instantiate as create_model  # noqa: E402
from mmrbench.coords import to_original  # noqa: E402
from mmrbench.errors import ConfigError  # noqa: E402
from mmrbench.testing.tiny_qwen import build_tiny_qwen25vl  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hf(tiny_qwen_dir):
    return create_model("hf", str(tiny_qwen_dir))


def _img(w, h, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _req(rid, ref, query, **cfg):
    msgs = [Message("system", "You inspect products."),
            Message("user", [ImagePart(ref), ImagePart(query), TextPart("Any anomaly? Answer Yes or No.")])]
    return Request(rid, msgs, GenerationConfig(**{"max_new_tokens": 6, "temperature": 0.0, **cfg}))


# -- pure helpers ------------------------------------------------------------------------------
def test_sampling_kwargs_greedy_and_paper_min_p():
    g = sampling_kwargs(GenerationConfig(max_new_tokens=7, temperature=0.0, top_p=0.5))
    assert g["do_sample"] is False and g["max_new_tokens"] == 7 and g["top_p"] is None and g["top_k"] is None
    s = sampling_kwargs(GenerationConfig(max_new_tokens=512, temperature=1.5, min_p=0.1))
    # every knob explicit: a checkpoint's top_k=1 / top_p=0.001 / repetition_penalty cannot leak in
    assert s == {"max_new_tokens": 512, "num_beams": 1, "repetition_penalty": 1.0, "do_sample": True,
                 "temperature": 1.5, "top_p": 1.0, "top_k": 0, "min_p": 0.1}
    s2 = sampling_kwargs(GenerationConfig(temperature=0.7, top_p=0.9, top_k=20))
    assert (s2["top_p"], s2["top_k"], s2["min_p"]) == (0.9, 20, None)
    assert config_key(GenerationConfig(seed=1)) != config_key(GenerationConfig(seed=2))


def test_finish_cuts_at_eos_and_flags_truncation():
    eos = {9, 10}
    assert finish([1, 2, 9, 10, 10], eos, 5) == ([1, 2], "ok")
    assert finish([1, 2, 3], eos, 3) == ([1, 2, 3], "truncated")
    assert finish([10], eos, 3) == ([], "ok")
    assert finish([1, 2], eos, 5) == ([1, 2], "ok")  # stopped by another criterion, not the budget


def test_special_ids_keep_answer_markers(tiny_qwen_dir):
    from mmrbench.adapters.hf_inputs import load_processor

    tok = load_processor(tiny_qwen_dir).tokenizer
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    drop = special_ids_to_drop(tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in drop
    assert tok.convert_tokens_to_ids("<|image_pad|>") in drop
    assert tok.convert_tokens_to_ids("<think>") not in drop and tok.convert_tokens_to_ids("</think>") not in drop


def test_group_sizes():
    assert group_sizes([(1, 2), (3, 4), (5, 6)], [2, 1]) == [[[1, 2], [3, 4]], [[5, 6]]]
    with pytest.raises(ValueError):
        group_sizes([(1, 2)], [2])


def test_smart_resize_hand_computed():
    # Qwen2.5-VL defaults: factor 28, pixels in [3136, 1003520]; results are (height, width)
    assert smart_resize(750, 1000) == (756, 1008)      # rounding only: 26.8 -> 27, 35.7 -> 36 patches
    assert smart_resize(1500, 2000) == (840, 1148)     # shrunk: sqrt(3e6 / 1003520) = 1.729; floor(30.98), floor(41.3)
    assert smart_resize(10, 20) == (56, 84)            # grown: sqrt(3136 / 200) = 3.96; ceil(1.41), ceil(2.83)
    assert smart_resize(50, 90, factor=8, min_pixels=256, max_pixels=4096) == (40, 80)
    assert smart_resize(50, 90, factor=8, min_pixels=256, max_pixels=10000) == (48, 88)
    with pytest.raises(ValueError):
        smart_resize(1, 300)


@settings(max_examples=300, deadline=None)
@given(st.integers(8, 3000), st.integers(8, 3000), st.sampled_from([(28, 3136, 1003520), (8, 256, 4096), (28, 200704, 401408)]))
def test_smart_resize_matches_transformers(h, w, params):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    if max(h, w) / min(h, w) > 200:
        return
    factor, lo, hi = params
    assert smart_resize(h, w, factor, lo, hi) == ref(h, w, factor=factor, min_pixels=lo, max_pixels=hi)


# -- end to end on the tiny model --------------------------------------------------------------
def test_generate_two_images_records_sent_sizes_and_usage(hf):
    ref, query = _img(64, 64, 0), _img(90, 50, 1)
    [r] = hf.generate([_req("a", ref, query)])
    assert r.status in ("ok", "truncated") and r.error is None and isinstance(r.text, str)
    # reference first, query last; query 90x50 -> smart_resize(50, 90, factor 8, max 64*64) = 40x80
    assert r.image_sizes == [[64, 64], [80, 40]]
    assert r.usage.completion_tokens <= 6 and (r.status == "ok" or r.usage.completion_tokens == 6)
    # prompt: chat text bytes + 64 + 50 image tokens (grids 16x16 and 10x20 patches, merged 2x2)
    assert r.usage.prompt_tokens > 64 + 50
    assert "<|im_end|>" not in r.text and "<|image_pad|>" not in r.text
    assert r.latency_s > 0
    # a pixel box in the sent frame maps back to the original 90x50 query exactly
    assert to_original([8, 4, 40, 20], "pixel", tuple(r.image_sizes[-1]), (90, 50)) == (9.0, 5.0, 45.0, 25.0)


def test_pixel_limits_option_changes_frame(tiny_qwen_dir):
    big = create_model("hf", str(tiny_qwen_dir), max_pixels=10000, min_pixels=256)
    [r] = big.generate([_req("a", _img(64, 64, 0), _img(90, 50, 1), max_new_tokens=1)])
    assert r.image_sizes == [[64, 64], [88, 48]]
    assert big.describe()["image_resize"] == {"factor": 8, "min_pixels": 256, "max_pixels": 10000}
    with pytest.raises(ConfigError):
        create_model("hf", str(tiny_qwen_dir), min_pixels=5000, max_pixels=4096)


def test_batched_greedy_equals_one_by_one(hf):
    reqs = [_req("a", _img(64, 64, 0), _img(90, 50, 1)), _req("b", _img(40, 40, 2), _img(32, 48, 3)),
            _req("c", _img(56, 56, 4), _img(64, 40, 5))]
    batched = hf.generate(reqs)
    single = [hf.generate([r])[0] for r in reqs]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.image_sizes for r in batched] == [r.image_sizes for r in single]
    assert [r.usage.prompt_tokens for r in batched] == [r.usage.prompt_tokens for r in single]


def test_sampling_seed_reproducible(hf):
    req = _req("s", _img(48, 48, 0), _img(48, 48, 1), temperature=1.5, min_p=0.1, max_new_tokens=12, seed=3)
    a, b = hf.generate([req])[0], hf.generate([req])[0]
    assert a.text == b.text
    texts = {hf.generate([_req("s", _img(48, 48, 0), _img(48, 48, 1), temperature=1.5, max_new_tokens=12, seed=s)])[0].text
             for s in range(4)}
    assert len(texts) > 1


def test_truncation_status(hf):
    [r] = hf.generate([_req("t", _img(48, 48, 0), _img(48, 48, 1), max_new_tokens=2)])
    if r.status == "truncated":
        assert r.usage.completion_tokens == 2
    else:
        assert r.status == "ok" and r.usage.completion_tokens <= 2


def test_describe(hf, tiny_qwen_dir):
    d = hf.describe()
    assert d["provider"] == "hf" and d["model_id"] == str(tiny_qwen_dir) and d["convention"] == "pixel"
    assert d["dtype"] == "float32" and d["device"] == "cpu"


def test_failing_batch_is_isolated(hf, monkeypatch):
    real = hf._generate_batch

    def flaky(reqs):
        if any(r.id == "bad" for r in reqs):
            raise RuntimeError("boom")
        return real(reqs)

    monkeypatch.setattr(hf, "_generate_batch", flaky)
    out = hf.generate([_req("ok1", _img(40, 40, 0), _img(40, 40, 1), max_new_tokens=1),
                       _req("bad", _img(40, 40, 0), _img(40, 40, 1), max_new_tokens=1)])
    assert out[0].status in ("ok", "truncated") and out[1].status == "error" and "boom" in out[1].error


def test_lora_adapter_loaded_merged_and_resolved(tiny_qwen_dir, tmp_path):
    peft = pytest.importorskip("peft")
    import transformers

    from mmrbench.adapters.hf_inputs import language_lora_targets

    base = transformers.AutoModelForImageTextToText.from_pretrained(str(tiny_qwen_dir))
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=language_lora_targets(base), init_lora_weights=False)
    adapted = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    adapter_dir = tmp_path / "adapter"
    adapted.save_pretrained(str(adapter_dir))

    req = _req("l", _img(48, 48, 0), _img(48, 48, 1), max_new_tokens=8)
    plain = create_model("hf", str(tiny_qwen_dir))
    with_lora = create_model("hf", str(tiny_qwen_dir), lora=str(adapter_dir))
    merged = create_model("hf", str(tiny_qwen_dir), lora=str(adapter_dir), merge=True)
    direct = create_model("hf", str(adapter_dir))  # adapter folder -> base from adapter_config.json
    assert with_lora.describe()["lora"] == str(adapter_dir) and direct.describe()["base_model"] == str(tiny_qwen_dir)
    texts = [m.generate([req])[0].text for m in (plain, with_lora, merged, direct)]
    assert texts[1] == texts[2] == texts[3]
    assert texts[0] != texts[1]
    with pytest.raises(ConfigError):
        create_model("hf", str(tiny_qwen_dir), lora=str(tmp_path / "missing"))


def test_missing_model_is_config_error(tmp_path):
    with pytest.raises(ConfigError):
        create_model("hf", str(tmp_path / "nope"), local_files_only=True)


# -- command line: mmrbench eval with the hf provider ------------------------------------------
def test_cli_eval_hf_tiny_model(tiny_qwen_dir, synth_small, tmp_path):
    import json

    from mmrbench.cli import main
    from mmrbench.predictions import read_predictions

    run = tmp_path / "run"
    rc = main(["eval", "--model", f"hf:{tiny_qwen_dir}", "--data", str(synth_small), "--limit", "4", "--out", str(run),
               "--max-new-tokens", "8", "--batch-size", "2", "--no-progress"])
    assert rc == 0
    result = json.loads((run / "result.json").read_text())
    assert result["model"]["provider"] == "hf" and result["model"]["model_id"] == str(tiny_qwen_dir)
    assert result["model"]["dtype"] == "float32" and result["model"]["image_resize"]["factor"] == 8
    assert result["dataset"]["n_samples"] == 4 and result["provenance"] == "run"
    preds = read_predictions(run / "predictions.jsonl")
    assert len(preds) == 4
    for p in preds:
        assert p.status in ("ok", "truncated") and p.convention == "pixel"
        assert len(p.image_sizes) == 2 and all(w % 8 == 0 and h % 8 == 0 for w, h in p.image_sizes)
        assert p.usage["completion_tokens"] <= 8
    # random weights write no readable Yes/No: every answer is scored, and counted invalid
    subsets = result["metrics"]["subdatasets"]
    assert sum(v["n"] for v in subsets.values()) == 4
    assert sum(v["invalid"] for v in subsets.values()) == 4


def test_checkpoint_generation_config_never_leaks(tmp_path):
    """Qwen2.5-VL ships top_k=1 / top_p=0.001 / repetition_penalty=1.05 in generation_config.json;
    a declared sampling protocol must not inherit them (nor greedy inherit do_sample=True)."""
    import json

    d = build_tiny_qwen25vl(tmp_path / "qwenlike", seed=0)
    gc = json.loads((d / "generation_config.json").read_text())
    gc.update(top_k=1, top_p=0.001, repetition_penalty=1.05, do_sample=True, temperature=0.1)
    (d / "generation_config.json").write_text(json.dumps(gc))
    plain = build_tiny_qwen25vl(tmp_path / "plain", seed=0)
    m, ref = create_model("hf", str(d)), create_model("hf", str(plain))
    ims = (_img(48, 48, 0), _img(48, 48, 1))
    greedy = _req("g", *ims, max_new_tokens=10)
    assert m.generate([greedy])[0].text == ref.generate([greedy])[0].text
    sampled = {m.generate([_req("s", *ims, temperature=1.5, max_new_tokens=10, seed=s)])[0].text for s in range(4)}
    assert len(sampled) > 1  # with the checkpoint's top_k=1 every seed would give the greedy text


def test_sent_size_method_matches_recorded_sizes(hf):
    """``sent_size`` lets callers (hint prompts) write boxes in the frame before sending."""
    [r] = hf.generate([_req("z", _img(64, 64, 0), _img(90, 50, 1), max_new_tokens=1)])
    assert [list(hf.sent_size(s)) for s in ((64, 64), (90, 50))] == r.image_sizes


def test_folder_digest_follows_content_not_location_and_caches(tmp_path, monkeypatch):
    import shutil

    import mmrbench.weights_identity as wi

    monkeypatch.setenv("MMRBENCH_CACHE", str(tmp_path / "cache"))
    a = build_tiny_qwen25vl(tmp_path / "a", seed=0)
    shutil.copytree(a, tmp_path / "copy")
    assert wi.folder_digest(a) == wi.folder_digest(tmp_path / "copy")  # same files, other place
    calls = []
    real = wi.file_sha256
    monkeypatch.setattr(wi, "file_sha256", lambda p: calls.append(p) or real(p))
    wi.folder_digest(a)
    assert calls == []  # every file's hash came from the cache
    b = build_tiny_qwen25vl(tmp_path / "b", seed=1)
    assert wi.folder_digest(b) != wi.folder_digest(a)
    # retrained in place: new digest, and the cache keeps one entry per file, not one per version
    import json
    n_entries = len(json.loads((tmp_path / "cache" / "file-sha256.json").read_text()))
    shutil.rmtree(a)
    build_tiny_qwen25vl(a, seed=2)
    assert wi.folder_digest(a) not in (wi.folder_digest(b), wi.folder_digest(tmp_path / "copy"))
    assert len(json.loads((tmp_path / "cache" / "file-sha256.json").read_text())) == n_entries
    assert wi.folder_digest("Qwen/Qwen2.5-VL-7B-Instruct") is None  # a hub id: not a local folder


def test_run_folder_refuses_to_resume_over_answers_of_other_weights_at_the_same_path(tmp_path, monkeypatch, synth_small):
    """Retrain into the same model folder and evaluate into the same run folder: the old answers must
    not be credited to the new weights (the fingerprint names the folder's content, not only its path)."""
    import shutil

    from mmrbench.cards import parse_spec
    from mmrbench.runner import EvalOptions, run_eval

    monkeypatch.setenv("MMRBENCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    build_tiny_qwen25vl(model, seed=0)
    card = parse_spec(f"hf:{model}")
    opts = EvalOptions(limit=2, progress=False, quiet=True)
    run_eval(card, synth_small, tmp_path / "run", opts)
    run_eval(card, synth_small, tmp_path / "run", opts)  # same weights: resumes (nothing left to ask)
    shutil.rmtree(model)
    build_tiny_qwen25vl(model, seed=1)  # "retrained" into the same folder
    with pytest.raises(ConfigError, match="weights_sha256"):
        run_eval(card, synth_small, tmp_path / "run", opts)
