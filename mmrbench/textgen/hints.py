"""The hint that makes a strong MLLM write a reasoning text consistent with the ground truth.

Two parts (paper Sec. 3.2): red boxes drawn around the anomalous regions of the query image (the
visual hint) and the boxes' coordinates and labels in the prompt (the text hint). The coordinates
are written in the target model's own convention, in the frame of the image *as the adapter will
send it* (a Qwen-family model behind an API gets its resized frame), because a model asked to copy
boxes copies them in the frame it was shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, cast

from PIL import Image, ImageDraw

from mmrbench.coords import check_convention, from_original, to_original
from mmrbench.vision.images import load_rgb
from mmrbench.data.schema import Box, Sample
from mmrbench.errors import ConfigError
from mmrbench.prompts import Prompt, build_prompt

HINT_COLOR = (255, 0, 0)
#: conventions whose numbers are written as integers in prompts (norm1 would round to 0/1)
INTEGER_CONVENTIONS = ("pixel", "norm1000", "gemini")


def hint_line_width(width: int, height: int) -> int:
    """Stroke width that stays visible after an API downsizes the image (about 0.8% of the short side)."""
    return max(2, round(min(width, height) / 128))


def draw_hint_boxes(image: Image.Image, boxes: Sequence[Box], *, color=HINT_COLOR,
                    line_width: int | None = None) -> Image.Image:
    """A copy of ``image`` with a red rectangle around each box.

    The stroke is drawn just *outside* the box (clamped to the image), so the anomalous pixels the
    model has to describe stay unpainted.
    """
    out = image.convert("RGB").copy()
    if not boxes:
        return out
    w, h = out.size
    lw = line_width or hint_line_width(w, h)
    draw = ImageDraw.Draw(out)
    for b in boxes:
        x1 = max(0, int(round(b.x1)) - lw)
        y1 = max(0, int(round(b.y1)) - lw)
        x2 = min(w - 1, int(round(b.x2)) - 1 + lw)
        y2 = min(h - 1, int(round(b.y2)) - 1 + lw)
        if x2 <= x1 or y2 <= y1:
            continue
        draw.rectangle([x1, y1, x2, y2], outline=color, width=lw)
    return out


def planned_sent_size(model: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The size at which ``model`` will send an image of ``size`` (width, height).

    The hint must be written in that frame before anything is sent, so the adapter's resize rule is
    read from what it publishes, in this order: a ``sent_size(size)`` method; an ``image_prep``
    (:class:`mmrbench.adapters.image_encoding.ImagePrep`, the openai provider's client-side resize);
    the ``image_resize`` entry of :meth:`describe` (Qwen-VL's smart resize of the ``hf`` and ``vllm``
    providers, ``factor``/``min_pixels``/``max_pixels``; LMDeploy's two-stage variant with a
    ``processor`` entry). Otherwise the image goes unresized. The pipeline compares this with the
    size the adapter reports afterwards and flags any difference in the report.
    """
    size = (int(size[0]), int(size[1]))
    fn = getattr(model, "sent_size", None)
    if callable(fn):
        w, h = fn(size)
        return int(w), int(h)
    prep = getattr(model, "image_prep", None)
    if prep is not None:
        from mmrbench.adapters.image_encoding import target_size

        w, h = target_size(size, prep)
        return int(w), int(h)
    try:
        resize = (model.describe() or {}).get("image_resize") if hasattr(model, "describe") else None
    except Exception:  # noqa: BLE001 - describe() of a half-built adapter: fall back to unresized
        resize = None
    if isinstance(resize, dict):
        if "processor" in resize:
            from types import SimpleNamespace

            from mmrbench.adapters.lmdeploy_engine import sent_sizes

            [[w, h]] = sent_sizes([SimpleNamespace(size=size)], True, resize.get("min_pixels"),
                                  resize.get("max_pixels"), resize.get("processor"))
            return int(w), int(h)
        if {"factor", "min_pixels", "max_pixels"} <= set(resize):
            from mmrbench.adapters.qwen_vision import sent_size

            params = {k: int(resize[k]) for k in ("factor", "min_pixels", "max_pixels")}
            w, h = sent_size(size, params)
            return int(w), int(h)
    return size


def hint_coords(boxes: Sequence[Box], convention: str, sent_size: tuple[int, int],
                original_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Ground-truth boxes written as the prompt writes them: in the model's convention and frame,
    rounded to integers exactly as :func:`mmrbench.prompts.format_boxes` renders them."""
    check_convention(convention)
    if convention not in INTEGER_CONVENTIONS:
        raise ConfigError(f"hint prompts write integer coordinates; convention '{convention}' needs fractions "
                          f"(use a model card with one of {', '.join(INTEGER_CONVENTIONS)})")
    out = []
    for b in boxes:
        c = from_original(b.xyxy, convention, sent_size, original_size)
        out.append(tuple(int(round(v)) for v in c))
    return out  # type: ignore[return-value]


def hinted_boxes(coords: Sequence[Sequence[float]], convention: str, sent_size: tuple[int, int],
                 original_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """What the model was told, mapped back to original pixels. Answers are checked against these:
    IoU is unchanged by per-axis scaling, so this equals checking in the model's own frame, and a
    model that copies the hint exactly always matches, whatever the rounding did to tiny boxes."""
    return [to_original(c, convention, sent_size, original_size) for c in coords]


@dataclass
class HintInputs:
    """Everything one hinted (or opposite-hinted) request needs."""

    prompt: Prompt
    images: list[Image.Image]          # in prompt order: reference (if any), then the query
    image_paths: list[str]
    coords: list[tuple[int, int, int, int]]   # hint coordinates as written in the prompt
    sent_size: tuple[int, int]         # planned size of the query as sent
    convention: str
    opposite: bool = False


def build_hint_inputs(sample: Sample, root: str | Path, *, convention: str, sent_size: tuple[int, int],
                      opposite: bool = False, variant: str = "default") -> HintInputs:
    """Prompt and images for one sample.

    ``opposite=False``: the true verdict, with red boxes and coordinates for an anomalous sample.
    ``opposite=True``: the wrong verdict and no boxes at all (neither drawn nor written), so the
    model has to invent its evidence: that is what makes a realistic negative for GRPO.
    """
    orig = (sample.width, sample.height)
    if opposite:
        coords: list = []
        prompt = build_prompt(sample, variant, opposite_hint=True)
    else:
        coords = hint_coords(sample.boxes, convention, sent_size, orig) if sample.is_anomalous else []
        prompt = build_prompt(sample, variant, hint=True, hint_coords=coords or None)
    root = Path(root)
    images = []
    for rel in prompt.images:
        images.append(load_rgb(root / rel, sample_id=sample.id))
    if images and images[-1].size != orig:
        raise ConfigError(f"sample '{sample.id}': image is {images[-1].size[0]}x{images[-1].size[1]} "
                          f"but the manifest says {sample.width}x{sample.height}")
    if not opposite and sample.is_anomalous and sample.boxes:
        images[-1] = draw_hint_boxes(images[-1], sample.boxes)
    # callers may pass the size as a JSON list: stored as a tuple
    sent = cast("tuple[int, int]", tuple(sent_size))
    return HintInputs(prompt, images, list(prompt.images), coords, sent, convention, opposite)
