"""Loading images with errors that name the file (and the sample) instead of a PIL traceback."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmrbench.errors import MMRBenchError


class ImageLoadError(MMRBenchError):
    pass


def load_rgb(path: str | os.PathLike, *, sample_id: str | None = None) -> Image.Image:
    """Open an image fully (so truncated files fail here, not later) and convert it to RGB."""
    who = f" (sample '{sample_id}')" if sample_id else ""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"image not found: {p}{who}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot read image {p}{who}: {exc}") from None


def load_mask(path: str | os.PathLike, *, sample_id: str | None = None) -> Image.Image:
    """A ground-truth mask as a single-channel image (non-zero = anomalous)."""
    who = f" (sample '{sample_id}')" if sample_id else ""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"mask not found: {p}{who}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot read mask {p}{who}: {exc}") from None
