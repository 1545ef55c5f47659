"""Loading images with errors that name the file (and the sample) instead of a PIL traceback."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmrbench.errors import MMRBenchError


class ImageLoadError(MMRBenchError):
    pass


def _load(path: str | os.PathLike, mode: str, what: str, sample_id: str | None) -> Image.Image:
    # load() reads every byte here, so a truncated file fails with its name, not later inside a model
    who = f" (sample '{sample_id}')" if sample_id else ""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"{what} not found: {p}{who}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot read {what} {p}{who}: {exc}") from None


def load_rgb(path: str | os.PathLike, *, sample_id: str | None = None) -> Image.Image:
    """An image fully decoded and converted to RGB."""
    return _load(path, "RGB", "image", sample_id)


def load_mask(path: str | os.PathLike, *, sample_id: str | None = None) -> Image.Image:
    """A ground-truth mask as a single-channel image (non-zero = anomalous)."""
    return _load(path, "L", "mask", sample_id)
