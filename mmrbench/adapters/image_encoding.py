"""Preparing images for remote APIs: optional resizing, encoding, and the size actually sent.

The harness maps boxes back through the size of the image *as sent*, so every resize happens here,
client-side, where it is recorded. ``smart_resize`` reproduces Qwen2.5-VL's resize rule (both sides
multiples of 28, pixel count within [min_pixels, max_pixels]) so a Qwen-family model served behind an
API receives an image already in its own frame and its absolute-pixel boxes map back exactly.
"""
from __future__ import annotations

import base64
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable

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
    im = image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    fmt, mime = FORMATS[prep.format]
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, format=fmt, quality=prep.jpeg_quality)
    else:
        im.save(buf, format=fmt, compress_level=1)  # fast; lossless either way
    return buf.getvalue(), mime, im.size


def b64encode(data: bytes) -> bytes:
    """Standard base64 (RFC 4648, with padding), through ``pybase64`` when installed (the ``api``
    extra).

    Why not only :func:`base64.b64encode`: at real image sizes it is the largest CPU cost of a request
    (about 4 ms for a 3 MB PNG) and it holds the GIL, so at 64 requests/s it alone fills a third of
    the one interpreter every request thread shares. ``pybase64``'s SIMD encoder is 40x faster and
    releases the GIL. The output is byte-identical (tested), so the fallback only costs time.
    """
    if _fast_b64 is not None:
        return _fast_b64(data)
    return base64.b64encode(data)


def _load_fast_b64() -> Callable[[bytes], bytes] | None:
    try:
        import pybase64
    except ImportError:
        return None
    return pybase64.b64encode


_fast_b64 = _load_fast_b64()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + b64encode(data).decode("ascii")


def data_url_bytes(data: bytes, mime: str) -> tuple[bytes, bytes]:
    """:func:`data_url` as two ASCII pieces, ``(b"data:MIME;base64,", base64)``: what goes on the
    wire, without a str round trip or a copy of megabytes to prepend a prefix."""
    return b"data:" + mime.encode("ascii") + b";base64,", b64encode(data)


# -- the pass-through path ---------------------------------------------------------------------------
def prepare_part(part: Any, prep: ImagePrep) -> tuple[bytes, str, tuple[int, int]]:
    """``(bytes, mime, size sent)`` for an image part of a request.

    A part read from a file (``file`` set, see :class:`mmrbench.requests_build.FileImagePart`) whose
    size the preparation keeps is sent as the file's own bytes when they are PNG or JPEG: no decode,
    no re-encode, and the size comes from the header. Anything else (a resize, another format, an
    image drawn on in memory) is decoded and encoded here; PIL's decoders, resamplers and encoders
    release the GIL while they work, so this never serialises the other requests in flight.
    """
    file = part.file
    size = part.size
    if file is not None and size is not None and target_size(tuple(size), prep) == tuple(size):
        data = part.file_bytes() if hasattr(part, "file_bytes") else _read(file)
        mime = _sniff(data)
        if mime is not None:
            return data, mime, (int(size[0]), int(size[1]))
    return prepare(part.image, prep, file)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class EncodedCache:
    """A thread-safe LRU of encoded images bounded by the bytes it holds (not by entry count: a
    1,500-px PNG is a hundred times a 64-px one).

    Meant for the images many requests share (the category's reference image): encoding a value
    happens *outside* the lock, so a miss never blocks other workers; two workers missing the same
    key at once both encode it and one copy is kept. A value larger than the whole bound is returned
    but not stored.
    """

    def __init__(self, max_bytes: int = 64 << 20):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_or_make(self, key: Hashable, make: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value of ``key``, or ``make()`` -> ``(value, nbytes)`` stored under the bound."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit[0]
            self.misses += 1
        value, n = make()
        if n > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = (value, n)
                self.nbytes += n
            while self.nbytes > self.max_bytes and self._items:
                _, (_, old) = self._items.popitem(last=False)
                self.nbytes -= old
        return value


def file_key(path: str) -> tuple | None:
    """Identity of a file's current content for a cache: path, size and modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def cached_prepare(part: Any, prep: ImagePrep, cache: EncodedCache | None,
                   finish: Callable[[bytes, str], Any] = lambda data, mime: data) -> tuple[Any, str, tuple[int, int]]:
    """:func:`prepare_part` followed by ``finish(bytes, mime)`` (e.g. a data URL), cached when the
    part is marked ``shared`` (a reference image) and comes from a file; ``(value, mime, size)``."""
    key = None
    if cache is not None and part.shared and part.file:
        fk = file_key(part.file)
        if fk is not None:
            key = (fk, prep, getattr(finish, "__name__", repr(finish)))
    if key is None or cache is None:
        data, mime, size = prepare_part(part, prep)
        return finish(data, mime), mime, size

    def make():
        data, mime, size = prepare_part(part, prep)
        value = finish(data, mime)
        if isinstance(value, (bytes, str)):
            n = len(value)
        elif isinstance(value, tuple) and all(isinstance(v, (bytes, str)) for v in value):
            n = sum(len(v) for v in value)
        else:
            n = len(data)
        return (value, mime, size), n

    return cache.get_or_make(key, make)
