"""A tiny, randomly initialised Qwen2.5-VL that runs anywhere, offline, in well under a second.

API (stable; the trainer tests and the ``hf`` provider tests build on it)::

    from mmrbench.testing.tiny_qwen import build_tiny_qwen25vl, tiny_qwen25vl_dir, load_tiny
    path = build_tiny_qwen25vl(out_dir, seed=0)      # -> Path; writes model + tokenizer + processor
    path = tiny_qwen25vl_dir()                       # built once into a cache folder, then reused
    model, processor = load_tiny(path)               # eval-mode fp32 model + image-only processor

The folder is a normal transformers checkpoint: ``AutoModelForImageTextToText.from_pretrained(path)``
loads the model (``Qwen2_5_VLForConditionalGeneration``, ~160k parameters). The processor is a
``Qwen2_5_VLProcessor`` minus its video processor (that one needs torchvision), saved under the
class name ``QwenVLImageOnlyProcessor``; load it with
:func:`mmrbench.adapters.hf_inputs.load_processor` (which also loads stock processors).

What is inside, and why:

* tokenizer: ``Qwen2Tokenizer`` (fast, byte-level BPE) over the 256 byte symbols with no merges, so
  any text encodes without a trained vocabulary; ids 256.. are Qwen's chat and vision special
  tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ...), and the
  model config's image/video/vision ids point at them.
* chat template: Qwen2.5-VL's layout (``<|im_start|>role\\n...<|im_end|>``, one
  ``<|vision_start|><|image_pad|><|vision_end|>`` per image, a default system turn), with
  ``{% generation %}`` around assistant turns so ``return_assistant_tokens_mask`` works.
* vision: patch 4, merge 2 (so images are resized to multiples of 8), 16x16 to 64x64 pixels.
  The PIL image processor is used: no torchvision.
* text: hidden 64, 2 layers, 4 heads (2 KV heads), M-RoPE sections [2, 3, 3].

Needs transformers >= 5 (the config uses ``rope_parameters``; the processor path relies on
``mm_token_type_ids``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from mmrbench.errors import require

#: bump when the built folder changes, so cached copies are rebuilt
BUILDER_VERSION = "1"

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

PATCH_SIZE = 4
MERGE_SIZE = 2
MIN_PIXELS = 16 * 16
MAX_PIXELS = 64 * 64

# Qwen2.5-VL's conversation layout, written for this project. Images may be given as
# {"type": "image"} (with or without payload) or {"type": "image_url"}.
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{%- set body = message['content'] -%}"
    "{%- else -%}{%- set body = namespace(t='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ['image', 'image_url'] -%}"
    "{%- set body.t = body.t + '<|vision_start|><|image_pad|><|vision_end|>' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set body.t = body.t + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set body = body.t -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- body + '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}{{- body + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _byte_vocab() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    for i, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = 256 + i
    return vocab


def build_tokenizer():
    transformers = require("transformers", "hf", "the tiny Qwen2.5-VL")
    tok = transformers.Qwen2Tokenizer(
        vocab=_byte_vocab(), merges=[],
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        model_max_length=32768,
    )
    return tok


def build_processor(tokenizer=None):
    try:  # transformers 5: the PIL backend class (the default one would need torchvision)
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import \
            Qwen2VLImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - transformers 4.x: the slow processor is PIL-based
        from transformers import Qwen2VLImageProcessor as ImageProcessor

    from mmrbench.adapters.qwen_vision import image_only_processor_class

    tokenizer = tokenizer or build_tokenizer()
    image_processor = ImageProcessor(
        patch_size=PATCH_SIZE, merge_size=MERGE_SIZE, temporal_patch_size=2,
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
    )
    return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                        chat_template=CHAT_TEMPLATE)


def build_config(tokenizer):
    transformers = require("transformers", "hf", "the tiny Qwen2.5-VL")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE, temporal_patch_size=2, window_size=16, out_hidden_size=64,
        fullatt_block_indexes=[1],
    )
    return transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_qwen25vl(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a randomly initialised tiny Qwen2.5-VL checkpoint (seeded) to ``out_dir``; return the path."""
    torch = require("torch", "hf")
    transformers = require("transformers", "hf", "the tiny Qwen2.5-VL")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = transformers.Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        pad_token_id=config.text_config.pad_token_id, bos_token_id=config.text_config.bos_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "mmrbench_tiny.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, "seed": seed}))
    return out


def tiny_qwen25vl_dir(cache_root: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """The tiny checkpoint in a cache folder, built on first use (atomically: concurrent test
    workers never see a half-written folder)."""
    from mmrbench.weights_identity import cache_root as default_root
    root = Path(cache_root) if cache_root is not None else default_root()
    target = root / f"tiny-qwen25vl-v{BUILDER_VERSION}-seed{seed}"
    marker = target / "mmrbench_tiny.json"
    if marker.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-qwen-", dir=root))
    try:
        build_tiny_qwen25vl(tmp, seed=seed)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not marker.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tiny(path: str | os.PathLike):
    """``(model, processor)`` from a tiny checkpoint folder; the model is fp32 in eval mode."""
    transformers = require("transformers", "hf", "the tiny Qwen2.5-VL")
    from mmrbench.adapters.hf_inputs import load_processor

    model = transformers.AutoModelForImageTextToText.from_pretrained(str(path))
    model.eval()
    return model, load_processor(path)
