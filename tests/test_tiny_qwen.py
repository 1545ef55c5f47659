"""The tiny Qwen2.5-VL: builds offline, loads through from_pretrained, generates with two images,
and supports LoRA + backward on CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from mmrbench.adapters.base import ImagePart, Message, TextPart  # noqa: E402
from mmrbench.adapters.hf_inputs import chat_messages, encode, language_lora_targets, load_processor  # noqa: E402
from mmrbench.adapters.qwen_vision import IMAGE_ONLY_PROCESSOR, resize_params, sent_size, sizes_from_grid  # noqa: E402
from mmrbench.testing.tiny_qwen import SPECIAL_TOKENS, build_tiny_qwen25vl, load_tiny, tiny_qwen25vl_dir  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_qwen_dir):
    return load_tiny(tiny_qwen_dir)


def _img(w, h, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _messages(ref, query, text="Is there an anomaly?"):
    return [Message("system", "You inspect products."),
            Message("user", [ImagePart(ref), ImagePart(query), TextPart(text)])]


def test_saved_folder_loads_with_stock_auto_classes(tiny_qwen_dir):
    names = {p.name for p in tiny_qwen_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(tiny_qwen_dir))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    n = sum(p.numel() for p in model.parameters())
    assert 50_000 < n < 1_000_000
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_qwen_dir))
    cfg = model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    # specials are single tokens and byte-level text round-trips, including non-ASCII
    for t in SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    text = "Yes. {'bbox_2d': [1, 2, 30, 40], 'label': 'rayure é'}"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert json.loads((tiny_qwen_dir / "processor_config.json").read_text())["processor_class"] == IMAGE_ONLY_PROCESSOR


def test_seeded_build_is_reproducible(tmp_path, tiny_qwen_dir):
    from safetensors.torch import load_file

    a = load_file(str(tiny_qwen_dir / "model.safetensors"))
    b = load_file(str(build_tiny_qwen25vl(tmp_path / "same", seed=0) / "model.safetensors"))
    c = load_file(str(build_tiny_qwen25vl(tmp_path / "other", seed=1) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point and a[k].numel() > 10)


def test_chat_template_layout(tiny):
    _, proc = tiny
    conv, images = chat_messages(_messages(_img(40, 40, 0), _img(40, 40, 1)))
    text = proc.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou inspect products.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
                    "Is there an anomaly?<|im_end|>\n<|im_start|>assistant\n")
    no_sys = proc.apply_chat_template([conv[1]], tokenize=False, add_generation_prompt=False)
    assert no_sys.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert len(images) == 2


def test_generate_two_images_batched_left_padding(tiny):
    model, proc = tiny
    ref, query = _img(60, 40, 0), _img(50, 50, 1)
    items = [chat_messages(_messages(ref, query)), chat_messages(_messages(_img(32, 32, 2), query, "Short?"))]
    batch = encode(proc, items)
    assert {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"} <= set(batch)
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()  # left padded
    # each image's token count equals its grid / merge^2, sizes equal smart_resize's
    grid = batch["image_grid_thw"]
    assert sizes_from_grid(grid, 4) == [sent_size(im.size, resize_params(proc.image_processor))
                                        for im in (ref, query, _img(32, 32, 2), query)]
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
        single = encode(proc, items[:1])
        logits_b = model(**batch).logits[0, -1]
        logits_1 = model(**single).logits[0, -1]
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 8
    torch.testing.assert_close(logits_b, logits_1, atol=1e-4, rtol=1e-4)


def test_mm_token_type_ids_change_positions(tiny):
    """transformers 5 builds 3-D rope positions from mm_token_type_ids; without them it silently
    falls back to 1-D positions, which changes the logits."""
    model, proc = tiny
    batch = encode(proc, [chat_messages(_messages(_img(48, 48, 3), _img(48, 48, 4)))])
    with torch.no_grad():
        full = model(**batch).logits[0, -1]
        without = model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits[0, -1]
    assert not torch.allclose(full, without, atol=1e-6)


def test_lora_on_language_model_only_and_backward(tiny_qwen_dir):
    peft = pytest.importorskip("peft")
    model, proc = load_tiny(tiny_qwen_dir)
    targets = language_lora_targets(model)
    assert targets and not any("visual" in t for t in targets) and not any(t.endswith("lm_head") for t in targets)
    assert any(t.endswith("q_proj") for t in targets) and any(t.endswith("down_proj") for t in targets)
    lm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=4, target_modules=targets, lora_dropout=0.0))
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and not any("visual" in n for n in trainable)
    conv, images = chat_messages(_messages(_img(40, 40, 5), _img(40, 40, 6)), answer="<answer>No.</answer>",
                                 embed_images=True)
    enc = proc.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                   return_tensors="pt")
    mask = enc.pop("assistant_masks")
    assert proc.tokenizer.decode(enc["input_ids"][0][mask[0].bool()]) == "<answer>No.</answer><|im_end|>"
    labels = torch.where(mask.bool(), enc["input_ids"], torch.full_like(enc["input_ids"], -100))
    lm.train()
    loss = lm(**enc, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in lm.named_parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_cached_dir_built_once(tmp_path):
    first = tiny_qwen25vl_dir(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = tiny_qwen25vl_dir(tmp_path)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no leftover temp folders
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(first))
    assert model.config.model_type == "qwen2_5_vl"
    assert type(load_processor(first)).__name__ == IMAGE_ONLY_PROCESSOR
