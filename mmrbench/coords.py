"""Coordinate conventions: how a model writes boxes, and the mapping back to original pixels.

Each adapter *declares* its convention instead of the harness guessing from the values (guessing,
or scoring both readings and keeping the better, biases results). The harness records the size of
the query image as it was sent, so resized inputs map back exactly.
"""
from __future__ import annotations

from typing import Sequence

from mmrbench.errors import ConfigError

#: name -> what the four numbers mean
CONVENTIONS: dict[str, str] = {
    "pixel": "absolute pixels [x1, y1, x2, y2] of the image as sent (Qwen2.5-VL in its resized frame, GPT-4o)",
    "norm1000": "[x1, y1, x2, y2] normalised to 0-1000 (Qwen2-VL, InternVL)",
    "gemini": "[ymin, xmin, ymax, xmax] normalised to 0-1000 (Gemini's box_2d)",
    "norm1": "[x1, y1, x2, y2] normalised to 0-1",
}


def check_convention(name: str) -> str:
    if name not in CONVENTIONS:
        raise ConfigError(f"unknown coordinate convention '{name}' (known: {', '.join(CONVENTIONS)})")
    return name


def to_original(
    coords: Sequence[float],
    convention: str,
    sent_size: tuple[int, int] | None,
    original_size: tuple[int, int],
) -> tuple[float, float, float, float]:
    """Map one box to original-image pixels ``(x1, y1, x2, y2)``, ordered and clipped to the image.

    ``sent_size`` and ``original_size`` are ``(width, height)``. Without a recorded sent size the
    image is taken as sent unresized.
    """
    ow, oh = original_size
    a, b, c, d = (float(v) for v in coords)
    if convention == "pixel":
        sw, sh = sent_size or original_size
        sx, sy = ow / sw, oh / sh
        x1, y1, x2, y2 = a * sx, b * sy, c * sx, d * sy
    elif convention == "norm1000":
        x1, y1, x2, y2 = a * ow / 1000, b * oh / 1000, c * ow / 1000, d * oh / 1000
    elif convention == "gemini":
        x1, y1, x2, y2 = b * ow / 1000, a * oh / 1000, d * ow / 1000, c * oh / 1000
    elif convention == "norm1":
        x1, y1, x2, y2 = a * ow, b * oh, c * ow, d * oh
    else:
        check_convention(convention)
        raise AssertionError  # pragma: no cover
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    clip = lambda v, hi: min(max(v, 0.0), float(hi))  # noqa: E731
    return (clip(x1, ow), clip(y1, oh), clip(x2, ow), clip(y2, oh))


def from_original(
    box: Sequence[float], convention: str, sent_size: tuple[int, int] | None, original_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Inverse of :func:`to_original`: write an original-pixel box in a model's convention
    (used to build training targets and hint prompts in the frame the model sees)."""
    ow, oh = original_size
    x1, y1, x2, y2 = (float(v) for v in box)
    if convention == "pixel":
        sw, sh = sent_size or original_size
        return (x1 * sw / ow, y1 * sh / oh, x2 * sw / ow, y2 * sh / oh)
    if convention == "norm1000":
        return (x1 * 1000 / ow, y1 * 1000 / oh, x2 * 1000 / ow, y2 * 1000 / oh)
    if convention == "gemini":
        return (y1 * 1000 / oh, x1 * 1000 / ow, y2 * 1000 / oh, x2 * 1000 / ow)
    if convention == "norm1":
        return (x1 / ow, y1 / oh, x2 / ow, y2 / oh)
    check_convention(convention)
    raise AssertionError  # pragma: no cover
