"""Processor inputs for training, with labels on the assistant turn only.

The prompt is encoded twice, with and without the answer; the prompt's tokens (system, images,
user text, the assistant header) must be a prefix of the full sequence, and every token from there
on (the think-then-answer text and the end-of-turn token) is a label. Everything else, and padding,
is -100. Checking the prefix instead of trusting a template feature (``{% generation %}`` masks)
works with any chat template and fails loudly when a template rewrites earlier turns.
"""
from __future__ import annotations

from typing import Any, Sequence

from mmrbench.adapters.hf_inputs import chat_messages, encode
from mmrbench.errors import ConfigError

IGNORE_INDEX = -100


def sft_batch(processor: Any, examples: Sequence[Any], max_length: int | None = None):
    """``BatchFeature`` with ``labels``: input ids on assistant tokens, -100 elsewhere (right padding)."""
    items_full = [chat_messages(e.messages, answer=e.target) for e in examples]
    items_prompt = [chat_messages(e.messages) for e in examples]
    full = encode(processor, items_full, add_generation_prompt=False, padding_side="right")
    labels = full["input_ids"].clone()
    labels[full["attention_mask"] == 0] = IGNORE_INDEX
    for i, item in enumerate(items_prompt):
        prompt_ids = encode(processor, [item], add_generation_prompt=True)["input_ids"][0]
        n = prompt_ids.shape[0]
        if not bool((full["input_ids"][i, :n] == prompt_ids).all()):
            raise ConfigError("the chat template does not render the prompt as a prefix of prompt+answer; "
                              "cannot mask the assistant turn")
        labels[i, :n] = IGNORE_INDEX
    full["labels"] = labels
    if max_length is not None and full["input_ids"].shape[1] > max_length:
        raise ConfigError(f"a training sequence has {full['input_ids'].shape[1]} tokens, above max_length "
                          f"{max_length}; lower max_pixels or raise max_length")
    return full


def prompt_inputs(processor: Any, messages: Sequence[Any]):
    """Encoded prompt (with the assistant header) of one conversation, batch of one."""
    return encode(processor, [chat_messages(messages)], add_generation_prompt=True)


def repeat_inputs(inputs: dict, n: int) -> dict:
    """``n`` copies of a one-row batch along dim 0 (Qwen's flattened ``pixel_values`` and
    ``image_grid_thw`` repeat the same way, so the copies stay aligned)."""
    return {k: (v.repeat(n, *[1] * (v.dim() - 1)) if hasattr(v, "repeat") else v) for k, v in inputs.items()}
