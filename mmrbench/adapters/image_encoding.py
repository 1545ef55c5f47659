"""Preparing images for remote APIs: optional resizing, encoding, and the size actually sent.

The harness maps boxes back through the size of the image *as sent*, so every resize happens here,
client-side, where it is recorded. ``smart_resize`` reproduces Qwen2.5-VL's resize rule (both sides
multiples of 28, pixel count within [min_pixels, max_pixels]) so a Qwen-family model served behind an
API receives an image already in its own frame and its absolute-pixel boxes map back exactly.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from mmrbench.errors import ConfigError

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}


@dataclass(frozen=True)
class ImagePrep:
    """How to prepare an image: ``resize`` is ``none``, ``max_side`` or ``smart`` (Qwen2.5-VL rule)."""

    resize: str = "none"
    max_side: int | None = None
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 1280 * 28 * 28
    factor: int = 28
    format: str = "png"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.resize not in ("none", "max_side", "smart"):
            raise ConfigError(f"unknown image resize mode '{self.resize}' (none, max_side, smart)")
        if self.resize == "max_side" and not (self.max_side and self.max_side > 0):
            raise ConfigError("image resize 'max_side' needs a positive max_side")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown image format '{self.format}' (png, jpeg)")


def smart_resize(width: int, height: int, factor: int = 28, min_pixels: int = 4 * 28 * 28,
                 max_pixels: int = 1280 * 28 * 28) -> tuple[int, int]:
    """Qwen2.5-VL's target size as ``(width, height)``: one implementation for the whole harness
    (:func:`mmrbench.adapters.qwen_vision.smart_resize`, which follows transformers' processor), so
    an image resized here for an API lands in exactly the frame the local provider reports."""
    from mmrbench.adapters.qwen_vision import smart_resize as _qwen_smart_resize
    h, w = _qwen_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h


def target_size(size: tuple[int, int], prep: ImagePrep) -> tuple[int, int]:
    w, h = size
    if prep.resize == "max_side":
        side = max(w, h)
        if side <= prep.max_side:  # type: ignore[operator]
            return w, h
        s = prep.max_side / side  # type: ignore[operator]
        return max(1, round(w * s)), max(1, round(h * s))
    if prep.resize == "smart":
        return smart_resize(w, h, prep.factor, prep.min_pixels, prep.max_pixels)
    return w, h


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def prepare(image: Image.Image, prep: ImagePrep, source_file: str | None = None) -> tuple[bytes, str, tuple[int, int]]:
    """Resize as configured and encode; returns ``(bytes, mime_type, (width, height) sent)``.

    ``source_file`` is the file ``image`` was decoded from, unmodified: when no resize is needed and
    it is already PNG or JPEG, its bytes are sent as they are (no re-encoding cost, no quality
    change). Callers that drew on the image must not pass it.
    """
    size = target_size(image.size, prep)
    if source_file is not None and size == image.size:
        try:
            with open(source_file, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        mime = _sniff(data)
        if mime is not None:
            return data, mime, image.size
    im = image if size == image.size else image.resize(size, Image.BICUBIC)
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    fmt, mime = FORMATS[prep.format]
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, format=fmt, quality=prep.jpeg_quality)
    else:
        im.save(buf, format=fmt, compress_level=1)  # fast; lossless either way
    return buf.getvalue(), mime, im.size


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
