"""AnomalyGPT's answers, maps and frames: the pure half of the ``anomalygpt`` provider.

Parsing its sentence, decoding the anomaly map a worker sends (inline or as a confined ``.npy``
file), putting the 224x224 map back on the part of the query AnomalyGPT saw (centre crop or padded
square), seeds per request, and the calibration folder's layout. No process, no I/O beyond the map
file: everything here is tested by hand-built inputs (see :mod:`mmrbench.adapters.anomalygpt` for why
each rule is what it is).
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrbench.errors import ConfigError


PROTOCOL = "mmrbench-anomalygpt/1"
#: the question AnomalyGPT was trained to answer (its own evaluation scripts ask it this way)
NATIVE_QUESTION = "Is there any anomaly in the image?"
LOCATIONS = ("top left", "top right", "bottom left", "bottom right", "top", "bottom", "left", "right", "center")
WORKER_ENV = "MMRBENCH_ANOMALYGPT_WORKER"
MAX_MAP_SIDE = 4096


class WorkerError(Exception):
    """The worker died, timed out, or broke the protocol."""


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.I)
_LOCATION = re.compile(r"\bat the (top left|top right|bottom left|bottom right|top|bottom|left|right|center|centre)\b", re.I)


def parse_sentence(text: str | None) -> tuple[bool | None, str | None]:
    """``(is_anomalous, location)`` from AnomalyGPT's reply; ``None`` when it says neither."""
    if not text:
        return None, None
    t = text.strip()
    m = _YES_NO.match(t)
    if m:
        decision: bool | None = m.group(1).lower() == "yes"
    elif re.search(r"\bthere is no anomal", t, re.I):
        decision = False
    elif re.search(r"\bthere (is|are) (an |some )?anomal", t, re.I):
        decision = True
    else:
        decision = None
    loc = _LOCATION.search(t)
    location = loc.group(1).lower().replace("centre", "center") if loc else None
    return decision, location


def decode_map(obj: Any, *, allowed_dir: str | None = None) -> np.ndarray:
    """The anomaly map of a reply as float32 (H, W). Never unpickles (``allow_pickle=False``).

    A ``.npy`` path must lie inside ``allowed_dir`` once symlinks are resolved (the adapter passes its
    own map folder): a worker cannot make the harness read any other file. ``None`` (direct library
    use) leaves paths unconfined.
    """
    if isinstance(obj, str):
        p = Path(obj)
        if p.suffix != ".npy":
            raise WorkerError(f"anomaly_map path must end in .npy: {obj}")
        if allowed_dir is not None:
            real, root = os.path.realpath(p), os.path.realpath(allowed_dir)
            if os.path.commonpath([real, root]) != root:
                raise WorkerError(f"anomaly_map path {obj} resolves outside the map folder {allowed_dir}")
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise WorkerError(f"cannot read anomaly map {obj}: {exc}") from None
    elif isinstance(obj, dict):
        dtype = obj.get("dtype")
        shape = obj.get("shape")
        if dtype not in ("float16", "float32"):
            raise WorkerError(f"anomaly_map dtype must be float16 or float32, got {dtype!r}")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(s, int) and 0 < s <= MAX_MAP_SIDE for s in shape)):
            raise WorkerError(f"anomaly_map shape must be [H, W] with sides 1..{MAX_MAP_SIDE}, got {shape!r}")
        try:
            raw = base64.b64decode(obj.get("data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise WorkerError("anomaly_map data is not valid base64") from None
        expected = shape[0] * shape[1] * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise WorkerError(f"anomaly_map has {len(raw)} bytes, expected {expected} for {dtype} {shape}")
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    else:
        raise WorkerError(f"anomaly_map must be a .npy path or an object, got {type(obj).__name__}")
    arr = np.asarray(arr)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape([s for s in arr.shape if s != 1][-2:]) if arr.size else arr
    if arr.ndim != 2 or not arr.size or max(arr.shape) > MAX_MAP_SIDE:
        raise WorkerError(f"anomaly map must be 2-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise WorkerError(f"anomaly map must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise WorkerError("anomaly map contains NaN or infinite values")
    return arr


def encode_map(arr: np.ndarray, dtype: str = "float16") -> dict[str, Any]:
    """Inverse of :func:`decode_map`'s inline form (used by the worker script and the tests)."""
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": [int(a.shape[0]), int(a.shape[1])], "data": base64.b64encode(a.tobytes()).decode("ascii")}


def normalise_map(arr: np.ndarray, mode: str) -> np.ndarray:
    if mode == "none":
        return arr
    if mode == "clip":
        return np.clip(arr, 0.0, 1.0)
    if mode == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
        return np.zeros_like(arr) if hi - lo < 1e-12 else (arr - lo) / (hi - lo)
    raise ConfigError(f"unknown map normalisation '{mode}' (known: none, clip, minmax)")


def crop_region(size: tuple[int, int], side: int = 224) -> tuple[float, float, float, float]:
    """``(x0, y0, width, height)`` in original pixels of the square AnomalyGPT sees.

    torchvision's ``Resize(224)`` scales the shorter side to 224 and the longer to
    ``int(224 * long / short)``; ``CenterCrop(224)`` then starts at ``int(round((long' - 224) / 2))``.
    """
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    short, long = min(w, h), max(w, h)
    if short == long:
        return 0.0, 0.0, float(w), float(h)
    new_long = int(side * long / short)
    start = int(round((new_long - side) / 2.0))
    scale = long / new_long
    if w > h:
        return start * scale, 0.0, side * scale, float(h)
    return 0.0, start * scale, float(w), side * scale


def pad_square(image):
    """The image on a black square canvas (top-left aligned), so a centre crop loses nothing."""
    from PIL import Image

    w, h = image.size
    side = max(w, h)
    if w == h:
        return image.convert("RGB")
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(image.convert("RGB"), (0, 0))
    return canvas


def map_boxes(amap: np.ndarray, threshold: float, region: tuple[float, float, float, float],
              image_size: tuple[int, int], *, min_area: int = 0, nms_iou: float = 0.5) -> list[tuple[float, ...]]:
    """Boxes of ``amap >= threshold`` in original pixels, the map lying on ``region`` of the image."""
    from mmrbench.vision.boxes import boxes_from_map

    x0, y0, rw, rh = region
    ow, oh = max(1, int(round(rw))), max(1, int(round(rh)))
    out = []
    for b in boxes_from_map(amap, threshold, out_size=(ow, oh), min_area=min_area, nms_iou=nms_iou):
        x1 = min(max(x0 + b[0] * rw / ow, 0.0), image_size[0])
        y1 = min(max(y0 + b[1] * rh / oh, 0.0), image_size[1])
        x2 = min(max(x0 + b[2] * rw / ow, 0.0), image_size[0])
        y2 = min(max(y0 + b[3] * rh / oh, 0.0), image_size[1])
        if x2 > x1 and y2 > y1:  # a box wholly in the padding is no box
            box: tuple[float, ...] = (round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))
            out.append(box)
    return out


def request_seed(base: int, request_id: str) -> int:
    """A seed per sample, stable across runs and independent of order and batching."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{base}\x1f{request_id}".encode()).digest()[:4], "little")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def calibration_groups(directory: str) -> dict[str, list[str]]:
    """``{group: sorted image paths}``: images directly in ``directory`` form one group, each
    sub-folder (a category) another. Every group needs two images (one is the other's reference)."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"calibration: {directory} is not a folder of held-out normal images")
    groups: dict[str, list[str]] = {}
    for d in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(str(p) for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            groups[d.name if d != root else "."] = files
    if not groups:
        raise ConfigError(f"calibration: {directory} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    small = [g for g, f in groups.items() if len(f) < 2]
    if small:
        raise ConfigError(f"calibration: {directory}/{small[0]} has fewer than 2 images (each needs a reference)")
    return groups


def location_box(location: str, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The third of the image a location phrase names (the optional fallback box)."""
    w, h = size
    col = 0 if "left" in location else 2 if "right" in location else 1
    row = 0 if "top" in location else 2 if "bottom" in location else 1
    return (col * w / 3, row * h / 3, (col + 1) * w / 3, (row + 1) * h / 3)


def answer_text(sentence: str, decision: bool | None, boxes: Sequence[Sequence[float]], label: str = "anomaly") -> str:
    """AnomalyGPT's sentence (as reasoning) plus the decision and boxes in the answer format."""
    from mmrbench.data.schema import Box
    from mmrbench.prompts import format_answer

    think = f"<think>{sentence.replace('<', '(').replace('>', ')').strip()}</think>"
    if decision is None:
        return think
    if not decision:
        return think + format_answer(False)
    if not boxes:
        return think + "<answer>Yes.</answer>"
    return think + format_answer(True, [Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), label) for b in boxes])
