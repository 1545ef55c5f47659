"""Loading images with errors that name the file (and the sample) instead of a PIL traceback."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmrbench.errors import MMRBenchError


class ImageLoadError(MMRBenchError):
    pass


#: largest image (width x height) the harness decodes: PIL's own default guard (about 9459 x 9459).
#: Real test images are 700 to 1,500 px a side; a file over the limit is an error for its sample,
#: never a half-minute decode or a process-killing allocation. ``MMRBENCH_MAX_IMAGE_PIXELS`` raises it.
MAX_IMAGE_PIXELS = int(os.environ.get("MMRBENCH_MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS or 89_478_485))


def decode(path: str | os.PathLike, what: str = "image", sample_id: str | None = None) -> Image.Image:
    """Open and fully decode an image: the size is checked against :data:`MAX_IMAGE_PIXELS` from the
    header *before* any pixel is decoded; every failure is one :class:`ImageLoadError` line."""
    who = f" (sample '{sample_id}')" if sample_id else ""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"{what} not found: {p}{who}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(f"{what} {p}{who} is {w}x{h}, over the {MAX_IMAGE_PIXELS}-pixel limit "
                                         f"(MMRBENCH_MAX_IMAGE_PIXELS raises it)")
                im.load()
                return im.copy()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{what} {p}{who} is over the pixel limit ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot read {what} {p}{who}: {exc}") from None


def _load(path: str | os.PathLike, mode: str, what: str, sample_id: str | None) -> Image.Image:
    # decode() reads every byte here, so a truncated file fails with its name, not later inside a model
    return decode(path, what, sample_id).convert(mode)


def load_rgb(path: str | os.PathLike, *, sample_id: str | None = None) -> Image.Image:
    """An image fully decoded and converted to RGB."""
    return _load(path, "RGB", "image", sample_id)


def load_mask(path: str | os.PathLike, *, sample_id: str | None = None) -> Image.Image:
    """A ground-truth mask as a single-channel image (non-zero = anomalous)."""
    return _load(path, "L", "mask", sample_id)
