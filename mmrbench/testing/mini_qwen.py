"""A small Qwen2.5-VL built from scratch for a given training set: the mini Anomaly-R1's base model.

Bigger than :mod:`mmrbench.testing.tiny_qwen` (hidden 128 and 2-4 layers by default, about 1M
parameters, images at ``image_side`` pixels) and with a byte-level BPE tokenizer trained on the
training set's own prompts and targets, so the protocol prompt is about 4x fewer tokens than with the
test model's byte vocabulary. Used by ``benchmarks/mini_anomaly_r1.py`` (settings search, Table 5 in
miniature) and ``tools/build_anomaly_r1_mini.py`` (the bundled reference checkpoint); the folder it
writes is a normal transformers checkpoint, loaded by the ``hf`` provider and the trainer alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmrbench.testing.mini_pretrain import PretrainConfig


def build_tokenizer(train_manifest: Path, vocab_size: int, variant: str = "default"):
    """A byte-level BPE tokenizer trained on this benchmark's prompts and targets.

    The test model's tokenizer has no merges (one token per byte), which makes the protocol prompt
    ~1,300 tokens; merges learned from the prompt texts cut it ~4x, and with it the cost of every
    forward pass. Same pre-tokenizer family and special tokens as the test model, so the processor,
    chat template and model config work unchanged.
    """
    import json as _json

    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from mmrbench.data.manifest import read_manifest
    from mmrbench.prompts import SYSTEM_PROMPT, build_prompt
    from mmrbench.testing.tiny_qwen import SPECIAL_TOKENS
    from mmrbench.train.data import DataOptions, target_text

    corpus = [SYSTEM_PROMPT]
    for s in read_manifest(train_manifest).samples:
        corpus += [build_prompt(s, variant).user, target_text(s, (s.width, s.height), DataOptions())]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = _json.loads(tk.to_str())["model"]
    vocab = dict(model["vocab"])
    for i, t in enumerate(SPECIAL_TOKENS):
        vocab[t] = len(model["vocab"]) + i
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # merges as (left, right) pairs, which the tokenizer takes although its annotation says strings
    return transformers.Qwen2Tokenizer(vocab=vocab, merges=merges,  # type: ignore[arg-type]
                                       additional_special_tokens=list(SPECIAL_TOKENS[1:]),
                                       eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                                       model_max_length=32768)


def build_model(out: Path, seed: int, image_side: int, hidden: int, layers: int, train_manifest: Path,
                variant: str = "default", pretrain: PretrainConfig | Sequence[PretrainConfig] | None = None,
                rope_theta: float = 10000.0) -> Path:
    """A random mini Qwen2.5-VL, then grounding pretraining when ``pretrain`` is given.

    Pretraining (:mod:`mmrbench.testing.mini_pretrain`) trains the language model on generic marks on
    procedural textures, none of the benchmark's images; the folder's ``pretrain.json`` keeps its losses.
    A sequence of configs runs them one after the other on the same weights, each with its own optimizer
    and schedule, as ``benchmarks/mini_pretrain_check.py --init`` continues a saved base: the measured
    base is 1,500 steps with shrinking marks, then 1,000 at the final sizes (docs/training.md, December 2).

    ``rope_theta``: the language model's rotary base. M-RoPE gives the (temporal, height, width) sections of
    the rotary frequencies in that order, fastest first, so the width gets the slowest ones: at the default
    10,000 with 32-dimensional heads they turn at most 0.047 rad across the 16 image columns (the height's
    fastest, 1.5 rad across the rows), and no head can tell two columns apart by position. A smaller base
    (its own folder, ``-rt`` in the name) speeds every frequency up (docs/training.md, December 2).
    """
    import torch
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mmrbench.adapters.qwen_vision import image_only_processor_class
    from mmrbench.testing import tiny_qwen as tq

    if pretrain is None:
        stages = []
    else:
        stages = list(pretrain) if isinstance(pretrain, Sequence) else [pretrain]
    pt = f"-{'+'.join(c.tag() for c in stages)}" if stages else ""
    rt = f"-rt{rope_theta:g}" if rope_theta != 10000.0 else ""
    path = out / f"model-v3-{train_manifest.parent.name}-{train_manifest.stem}-{variant}-h{hidden}-l{layers}-s{image_side}{rt}{pt}"
    if (path / "config.json").exists():
        return path
    tok = build_tokenizer(train_manifest, 1024, variant)
    px = image_side * image_side
    ip = Qwen2VLImageProcessorPil(patch_size=tq.PATCH_SIZE, merge_size=tq.MERGE_SIZE, temporal_patch_size=2,
                                  min_pixels=px, max_pixels=px)
    proc = image_only_processor_class()(image_processor=ip, tokenizer=tok, chat_template=tq.CHAT_TEMPLATE)
    cfg = tq.build_config(tok)
    t = cfg.text_config
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = hidden, hidden * 2, layers
    t.num_attention_heads, t.num_key_value_heads = 4, 2
    t.layer_types = ["full_attention"] * layers
    half = hidden // t.num_attention_heads // 2  # M-RoPE splits half the head dim over (t, h, w), Qwen's 1:1.5:1.5
    t.rope_parameters = {**t.rope_parameters, "mrope_section": [half // 4, half * 3 // 8, half - half // 4 - half * 3 // 8],
                         "rope_theta": rope_theta}
    v = cfg.vision_config
    v.hidden_size, v.intermediate_size, v.out_hidden_size, v.num_heads = 64, 128, hidden, 2
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=[t.eos_token_id, t.bos_token_id], pad_token_id=t.pad_token_id, bos_token_id=t.bos_token_id,
        do_sample=False)
    if stages:
        from mmrbench.testing.mini_pretrain import grounding_eval, run_pretraining, save_report

        losses = [x for c in stages
                  for x in run_pretraining(model, proc, c, side=image_side, seed=seed, log=lambda m: print(m, flush=True))]
        check = grounding_eval(model, proc, side=image_side, seed=seed)
        print(f"pretrained: presence {check['presence']:.1%}, marks found at IoU 0.1 {check['recall_iou01']:.1%}, "
              f"at 0.5 {check['recall_iou05']:.1%}", flush=True)
        path.mkdir(parents=True, exist_ok=True)
        save_report(path / "pretrain.json", losses, check, [c.tag() for c in stages])
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path
