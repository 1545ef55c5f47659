"""Qwen2-VL / Qwen2.5-VL input geometry and an image-only processor.

Why this module exists:

* Qwen2.5-VL sees every image resized so both sides are multiples of ``patch_size * merge_size``
  (28 for the released models) and the pixel count lies in ``[min_pixels, max_pixels]``. It writes
  boxes as absolute pixels *of that resized image*, so the harness must know the exact sent size to
  map boxes back (:func:`smart_resize`, :func:`sent_size`).
* The stock ``Qwen2_5_VLProcessor`` insists on a video processor, and transformers' video
  processors import torchvision. Image-only evaluation and training need neither, so
  :func:`image_only_processor_class` gives a subclass without the video part (the tiny test model
  saves it; :func:`mmrbench.adapters.hf_inputs.load_processor` uses it as a fallback for real
  checkpoints when torchvision is missing).
"""
from __future__ import annotations

import functools
import math
from typing import Any

#: the released Qwen2-VL / Qwen2.5-VL defaults (pixels of the resized image)
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280

IMAGE_ONLY_PROCESSOR = "QwenVLImageOnlyProcessor"


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Return ``(height, width)`` of the image as a Qwen-VL model sees it.

    Each side is rounded to a multiple of ``factor``; when the rounded area leaves
    ``[min_pixels, max_pixels]`` both sides are scaled by a common factor (floor when shrinking,
    ceil when growing) so the aspect ratio is kept as well as the grid allows.
    """
    # no lower clamp on the rounding: a side that rounds to 0 leaves an area below min_pixels and is
    # scaled up below, exactly as transformers' image processor does (the sent size must match it)
    return _qwen_resize(height, width, factor, min_pixels, max_pixels, min_side=0)


#: qwen-vl-utils' defaults (what LMDeploy's Qwen2-VL preprocessing calls before the processor)
QWEN_VL_UTILS_MIN_PIXELS = 4 * 28 * 28
QWEN_VL_UTILS_MAX_PIXELS = 16384 * 28 * 28


def qwen_vl_utils_resize(height: int, width: int, factor: int = 28, min_pixels: int = QWEN_VL_UTILS_MIN_PIXELS,
                         max_pixels: int = QWEN_VL_UTILS_MAX_PIXELS) -> tuple[int, int]:
    """``(height, width)`` after the ``qwen-vl-utils`` package's resize, which differs from
    transformers' in one point: a side never rounds below ``factor``."""
    return _qwen_resize(height, width, factor, min_pixels, max_pixels, min_side=factor)


def _qwen_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                 min_side: int) -> tuple[int, int]:
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds 200")
    h = max(min_side, round(height / factor) * factor)
    w = max(min_side, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return h, w


def resize_params_from_config(cfg: dict[str, Any]) -> dict[str, int]:
    """Resize parameters from a ``preprocessor_config.json`` dict (Qwen defaults where absent)."""
    size = cfg.get("size") or {}
    lo = cfg.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or DEFAULT_MIN_PIXELS
    hi = cfg.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or DEFAULT_MAX_PIXELS
    factor = int(cfg.get("patch_size", 14)) * int(cfg.get("merge_size", 2))
    return {"factor": factor, "min_pixels": int(lo), "max_pixels": int(hi)}


def resize_params(image_processor: Any) -> dict[str, int] | None:
    """``factor``, ``min_pixels`` and ``max_pixels`` of a Qwen-VL image processor, or None when the
    processor does not resize the Qwen way (then images are taken as sent unresized)."""
    patch = getattr(image_processor, "patch_size", None)
    merge = getattr(image_processor, "merge_size", None)
    size = getattr(image_processor, "size", None)
    if not patch or not merge or size is None:
        return None
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    lo = get("shortest_edge", None) or getattr(image_processor, "min_pixels", None)
    hi = get("longest_edge", None) or getattr(image_processor, "max_pixels", None)
    if not lo or not hi:
        return None
    return {"factor": int(patch) * int(merge), "min_pixels": int(lo), "max_pixels": int(hi)}


def sent_size(image_size: tuple[int, int], params: dict[str, int] | None) -> tuple[int, int]:
    """``(width, height)`` of an image of original ``image_size = (width, height)`` as sent."""
    if params is None:
        return image_size
    w, h = image_size
    rh, rw = smart_resize(h, w, **params)
    return rw, rh


def sizes_from_grid(image_grid_thw, patch_size: int) -> list[tuple[int, int]]:
    """``(width, height)`` per image from the processor's ``image_grid_thw`` (t, h, w in patches):
    the size the vision tower actually saw, used to cross-check :func:`sent_size`."""
    return [(int(g[2]) * patch_size, int(g[1]) * patch_size) for g in image_grid_thw]


@functools.lru_cache(maxsize=1)
def image_only_processor_class():
    """A ``Qwen2_5_VLProcessor`` without the video processor (built lazily: transformers is optional)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class QwenVLImageOnlyProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL processor for images only: no video processor, hence no torchvision."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    QwenVLImageOnlyProcessor.__name__ = QwenVLImageOnlyProcessor.__qualname__ = IMAGE_ONLY_PROCESSOR
    return QwenVLImageOnlyProcessor
