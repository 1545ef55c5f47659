"""Turning :class:`~mmrbench.adapters.base.Request` messages into transformers processor inputs.

Shared by the ``hf`` provider (inference) and the Anomaly-R1 trainer (SFT / GRPO), so the model
sees the same token layout in training and evaluation: the processor's own chat template renders
the conversation, one image placeholder per :class:`ImagePart` in message order (reference first,
query second), and the processor expands the placeholders and returns ``pixel_values``,
``image_grid_thw`` and, for Qwen2.5-VL, ``mm_token_type_ids`` (transformers 5 derives the 3-D
rope positions from them; always pass every key the processor returns to the model).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from mmrbench.adapters.base import ImagePart, Message, Request, TextPart
from mmrbench.errors import ConfigError, require

Conversation = list[dict[str, Any]]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _processor_class_name(path: Path) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json"):
        cls = _read_json(path / name).get("processor_class")
        if cls:
            return cls
    return None


def _torchvision_usable() -> bool:
    try:
        from transformers.utils import is_torchvision_available

        return bool(is_torchvision_available())
    except Exception:  # pragma: no cover
        return False


def set_pixel_limits(processor: Any, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Override the Qwen-VL resize bounds of a loaded processor (pixels of the resized image)."""
    if min_pixels is None and max_pixels is None:
        return
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None)
    if ip is None or size is None:
        raise ConfigError("min_pixels/max_pixels apply only to Qwen-VL style processors")
    current = dict(size) if isinstance(size, dict) else {k: getattr(size, k, None)
                                                         for k in ("shortest_edge", "longest_edge")}
    if min_pixels is not None:
        current["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        current["longest_edge"] = int(max_pixels)
    lo, hi = current.get("shortest_edge"), current.get("longest_edge")
    if lo and hi and lo > hi:
        raise ConfigError(f"min_pixels {lo} exceeds max_pixels {hi}")
    ip.size = type(size)(**current) if not isinstance(size, dict) else current
    for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if v is not None and hasattr(ip, k):
            setattr(ip, k, int(v))


def load_processor(path: str | os.PathLike, *, min_pixels: int | None = None, max_pixels: int | None = None,
                   **kwargs: Any):
    """Load a processor from a local folder or hub id.

    The image-only Qwen processor (what the tiny test model saves) is loaded with its own class;
    a stock Qwen2-VL/Qwen2.5-VL folder goes through ``AutoProcessor`` and, when that fails because
    the video processor needs torchvision, falls back to the image-only class. Everything else is
    ``AutoProcessor``.
    """
    transformers = require("transformers", "hf", "local models")
    from mmrbench.adapters.qwen_vision import IMAGE_ONLY_PROCESSOR, image_only_processor_class

    p = Path(path)
    local = p.is_dir()
    cls_name = _processor_class_name(p) if local else None
    model_type = _read_json(p / "config.json").get("model_type") if local else None
    if cls_name == IMAGE_ONLY_PROCESSOR:
        processor = image_only_processor_class().from_pretrained(str(path), **kwargs)
    else:
        try:
            processor = transformers.AutoProcessor.from_pretrained(str(path), **kwargs)
        except (ImportError, ValueError, TypeError, AttributeError) as exc:
            qwen = model_type in ("qwen2_vl", "qwen2_5_vl") or (cls_name or "").startswith("Qwen2")
            if not qwen or _torchvision_usable():
                raise
            processor = image_only_processor_class().from_pretrained(str(path), **kwargs)
            processor._mmrbench_fallback = f"image-only processor ({type(exc).__name__})"
    set_pixel_limits(processor, min_pixels, max_pixels)
    return processor


def chat_messages(messages: Sequence[Message], answer: str | None = None, *,
                  embed_images: bool = False) -> tuple[Conversation, list]:
    """Chat-template messages plus the images in placeholder order.

    ``answer`` appends an assistant turn (training targets). ``embed_images`` also puts each PIL
    image into its ``{"type": "image"}`` part, which ``processor.apply_chat_template(...,
    tokenize=True, return_assistant_tokens_mask=True)`` needs (the trainer's loss mask).
    """
    conv: Conversation = []
    images: list = []
    for m in messages:
        content: list[dict[str, Any]] = []
        for part in m.parts:
            if isinstance(part, ImagePart):
                content.append({"type": "image", "image": part.image} if embed_images else {"type": "image"})
                images.append(part.image)
            elif isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
        conv.append({"role": m.role, "content": content})
    if answer is not None:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return conv, images


def render(processor: Any, conv: Conversation, add_generation_prompt: bool = True) -> str:
    """Chat-templated text of one conversation (image placeholders not yet expanded)."""
    template_owner = processor if getattr(processor, "chat_template", None) else getattr(processor, "tokenizer", processor)
    if not getattr(template_owner, "chat_template", None):
        raise ConfigError("the model's processor has no chat template")
    return template_owner.apply_chat_template(conv, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode(processor: Any, items: Sequence[tuple[Conversation, list]], *, add_generation_prompt: bool = True,
           padding_side: str = "left", return_tensors: str = "pt"):
    """Tokenise a batch of ``(conversation, images)`` into model inputs (a ``BatchFeature``).

    Left padding by default, as batched generation needs; pass ``padding_side="right"`` for training.
    """
    texts = [render(processor, conv, add_generation_prompt) for conv, _ in items]
    images = [im for _, ims in items for im in ims]
    tok = getattr(processor, "tokenizer", processor)
    old_side = getattr(tok, "padding_side", None)
    tok.padding_side = padding_side
    try:
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": return_tensors}
        if images:
            kwargs["images"] = images
        return processor(**kwargs)
    finally:
        if old_side is not None:
            tok.padding_side = old_side


def encode_requests(processor: Any, requests: Sequence[Request], **kwargs: Any):
    """:func:`encode` for harness requests."""
    return encode(processor, [chat_messages(r.messages) for r in requests], **kwargs)


def language_lora_targets(model: Any) -> list[str]:
    """Names of the linear layers LoRA should adapt: every ``nn.Linear`` of the language model,
    none of the vision tower (``visual``) and not the output head. Pass as peft ``target_modules``."""
    torch = require("torch", "hf")
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        if "visual" in parts or "vision_tower" in parts or "lm_head" in parts[-1:]:
            continue
        names.append(name)
    return names
