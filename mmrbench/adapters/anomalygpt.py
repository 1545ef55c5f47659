"""``anomalygpt`` provider: AnomalyGPT through a worker process in its own environment.

AnomalyGPT pins torch 1.13 / transformers 4.29, which cannot share a process (or a virtualenv)
with this harness. So the harness starts a worker (``tools/anomalygpt_worker.py`` run with the
AnomalyGPT environment's Python inside an AnomalyGPT checkout, or any program speaking the same
protocol) and talks to it over stdin/stdout in JSON lines. The protocol is specified in
docs/local-models.md ("AnomalyGPT worker protocol"); in short:

* worker -> harness, once at start: ``{"ready": true, "protocol": "mmrbench-anomalygpt/1", ...}``
* harness -> worker, one line per sample: ``{"id", "query_image", "reference_image" (path or
  null), "prompt", optional "max_new_tokens", "temperature", "top_p", "seed", "map_dir"}``
* worker -> harness: ``{"id", "text", "anomaly_map", "error"}`` where ``anomaly_map`` is a path to
  a ``.npy`` file or ``{"dtype": "float16"|"float32", "shape": [H, W], "data": base64}`` (raw
  little-endian bytes), normally 224x224 in [0, 1]; ``error`` is null or a message.
* ``{"cmd": "shutdown"}`` or end of stdin ends the worker.

AnomalyGPT answers with a sentence ("No, there is no anomaly in the image." / "Yes, there is an
anomaly in the image, at the top left of the image."). The decision comes from that sentence; the
boxes come from the anomaly map through the same contour pipeline as the classical detectors
(:func:`mmrbench.vision.boxes.boxes_from_map`). The adapter writes both into the protocol's
answer format, boxes in original pixels (convention ``pixel``, sent size = original size), so the
normal parser and scorer apply:
``<think>{sentence}</think><answer>Yes. {'bbox_2d': [x1, y1, x2, y2], 'label': 'anomaly'}</answer>``.

Three facts about AnomalyGPT (its repository, commit f21c51b) shape the bridge:

* **Frame.** ``generate`` resizes the shorter side to 224 and centre-crops 224x224 (ImageBind's
  ``load_and_transform_vision_data``), so the 224x224 map covers only the central square of a
  non-square query. ``frame="crop"`` (default, the model as published) puts the map back on that
  square (:func:`crop_region`); ``frame="pad"`` pads query and reference to a square first, so the
  whole image is seen, and strips the padding from the boxes.
* **Map meaning.** With a reference image the map is 1 - cosine similarity of patch tokens, not a
  probability, so a fixed threshold is uncalibrated. ``calibration=DIR`` runs the worker on held-out
  normal images (one-shot, each against another normal of its folder) and takes the detectors' fair
  threshold (:func:`mmrbench.vision.thresholds.fair_threshold`) over their map maxima.
* **Sampling.** ``generate`` always samples (``do_sample=True``) and seeds nothing: greedy is not
  available. Each request carries a seed (the request's, or one derived from the run seed and the
  sample id), which the worker applies, so a run can be repeated.

Map files (``anomaly_map`` as a ``.npy`` path) are accepted only inside the folder the harness
names in ``map_dir`` (checked after resolving symlinks).

A worker that crashes or exceeds the per-request timeout is killed; the request gets status
``error`` (with the tail of the worker's stderr) and the next request starts a fresh worker.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrbench.adapters.base import (GenerationConfig, ImagePart, Message, ModelAPI, Request, Response, TextPart,
                                    Usage)
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
            out.append((round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)))
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


# ---------------------------------------------------------------------------------------------
# the worker process
# ---------------------------------------------------------------------------------------------
class Worker:
    """One worker process: JSON lines in, JSON lines out, stderr kept as a short tail for errors."""

    def __init__(self, argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 1800.0):
        self.argv = argv
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         cwd=cwd, env={**os.environ, **(env or {})}, text=True, encoding="utf-8",
                                         errors="replace", bufsize=1)
        except OSError as exc:
            raise WorkerError(f"cannot start AnomalyGPT worker {shlex.join(argv)}: {exc}") from None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=30)
        self.noise: deque[str] = deque(maxlen=10)
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self.info = self._await_ready(startup_timeout_s)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))

    def tail(self) -> str:
        time.sleep(0.05)  # let the stderr pump catch the last words of a dying worker
        return " | ".join(list(self.stderr_tail)[-5:])

    def _next_json(self, deadline: float) -> dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                raise TimeoutError from None
            if line is None:
                self.proc.wait(timeout=5)
                raise WorkerError(f"worker exited with code {self.proc.returncode}: {self.tail() or 'no stderr'}")
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.noise.append(line[:200])  # a library printing to stdout: not protocol, skip
                continue
            if isinstance(obj, dict):
                return obj
            self.noise.append(line[:200])

    def _await_ready(self, timeout_s: float) -> dict[str, Any]:
        try:
            msg = self._next_json(time.monotonic() + timeout_s)
        except TimeoutError:
            self.kill()
            raise WorkerError(f"worker sent no ready line within {timeout_s:.0f} s: {self.tail()}") from None
        if not msg.get("ready"):
            self.kill()
            raise WorkerError(f"worker's first message is not a ready line: {str(msg)[:200]}")
        if msg.get("protocol") != PROTOCOL:
            self.kill()
            raise WorkerError(f"worker speaks protocol {msg.get('protocol')!r}, expected {PROTOCOL!r}")
        return msg

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise WorkerError(f"worker exited with code {self.proc.returncode}: {self.tail()}")
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"cannot write to worker ({exc}): {self.tail()}") from None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self._next_json(deadline)
            except TimeoutError:
                raise WorkerError(f"worker gave no answer within {timeout_s:.0f} s") from None
            if msg.get("id") == request["id"]:
                return msg

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "shutdown"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout_s)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # only this worker, by its own handle
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


# ---------------------------------------------------------------------------------------------
# the provider
# ---------------------------------------------------------------------------------------------
class AnomalyGPTModel(ModelAPI):
    provider = "anomalygpt"
    convention = "pixel"
    max_concurrency = 1
    batch_size = 1

    def __init__(self, model: str, *, worker: str | None = None, cwd: str | None = None,
                 env: dict[str, str] | None = None, timeout_s: float = 600.0, startup_timeout_s: float = 1800.0,
                 threshold: float | None = None, normalize: str = "none", min_area: int = 0, nms_iou: float = 0.5,
                 prompt: str = "native", question: str = NATIVE_QUESTION, location_fallback: bool = False,
                 label: str = "anomaly", max_restarts: int = 3, sampling: GenerationConfig | None = None,
                 frame: str = "crop", calibration: str | None = None, calibration_quantile: float = 1.0,
                 seed: int = 0, convention: str | None = None, **_ignored: Any):
        super().__init__(model)
        command = worker or os.environ.get(WORKER_ENV) or (model if _looks_like_command(model) else None)
        if not command:
            raise ConfigError(
                f"anomalygpt needs the worker command line: pass it as the model (anomalygpt:'python "
                f"tools/anomalygpt_worker.py --root ...'), as --option worker=..., or in ${WORKER_ENV}")
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if prompt not in ("native", "harness"):
            raise ConfigError(f"prompt must be 'native' or 'harness', got {prompt!r}")
        if threshold is not None and not (np.isfinite(float(threshold)) and 0.0 <= float(threshold) <= 2.0):
            raise ConfigError(f"threshold must be in [0, 2] (probabilities, or 1 - cosine similarity with a "
                              f"reference), got {threshold}")
        if threshold is not None and calibration:
            raise ConfigError("give either threshold or calibration, not both")
        if frame not in ("crop", "pad"):
            raise ConfigError(f"frame must be 'crop' (AnomalyGPT's centre crop) or 'pad', got {frame!r}")
        if not 0.0 <= float(calibration_quantile) <= 1.0:
            raise ConfigError(f"calibration_quantile must be in [0, 1], got {calibration_quantile}")
        normalise_map(np.zeros((1, 1), np.float32), normalize)  # validates the name
        self.cwd, self.env = cwd, env
        self.timeout_s, self.startup_timeout_s = float(timeout_s), float(startup_timeout_s)
        self.threshold_given = threshold is not None
        self.threshold, self.normalize = (0.5 if threshold is None else float(threshold)), normalize
        self.frame, self.seed = frame, int(seed)
        self.calibration: dict[str, Any] | None = None
        self._warned_uncalibrated = False
        self.min_area, self.nms_iou = int(min_area), float(nms_iou)
        self.prompt_mode, self.question = prompt, question
        self.location_fallback = bool(location_fallback)
        self.label = label
        self.max_restarts = int(max_restarts)
        self.sampling = sampling or GenerationConfig()
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._failed_starts = 0
        self._last_start_error: str | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="mmrbench-agpt-")
        self.map_dir = os.path.join(self._tmp.name, "maps")
        os.makedirs(self.map_dir)
        try:  # fail early on a broken command line or environment
            self._worker = Worker(self.argv, cwd=self.cwd, env=self.env, startup_timeout_s=self.startup_timeout_s)
        except WorkerError as exc:
            self._tmp.cleanup()
            raise ConfigError(f"AnomalyGPT worker did not start: {exc}") from None
        if calibration:
            try:
                self.calibrate(calibration, float(calibration_quantile))
            except Exception:
                self.close()
                raise

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"worker": shlex.join(self.argv), "threshold": self.threshold, "normalize": self.normalize,
                  "min_area": self.min_area, "nms_iou": self.nms_iou, "prompt": self.prompt_mode,
                  "location_fallback": self.location_fallback, "frame": self.frame, "seed": self.seed,
                  "sampling": "AnomalyGPT always samples (do_sample=True, no greedy); seeded per request",
                  "threshold_source": (f"calibrated: {self.calibration['rule']}" if self.calibration else
                                       "given" if self.threshold_given else "default 0.5 (uncalibrated)")})
        if self.calibration:
            d["calibration"] = self.calibration
        if self.prompt_mode == "native":
            d["question"] = self.question
        if self._worker is not None:
            d["worker_info"] = {k: v for k, v in self._worker.info.items() if k not in ("ready", "pid")}
        return d

    # -- worker lifecycle ------------------------------------------------------------------------
    def _ensure_worker(self) -> Worker:
        if self._worker is not None and self._worker.alive():
            return self._worker
        if self._failed_starts >= self.max_restarts:
            raise WorkerError(f"not restarted after {self._failed_starts} failed starts; last error: "
                              f"{self._last_start_error}")
        try:
            self._worker = Worker(self.argv, cwd=self.cwd, env=self.env, startup_timeout_s=self.startup_timeout_s)
        except WorkerError as exc:
            self._failed_starts += 1
            self._last_start_error = str(exc)
            self._worker = None
            raise
        self._failed_starts = 0
        return self._worker

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._tmp.cleanup()

    # -- requests --------------------------------------------------------------------------------
    def _image_path(self, part: ImagePart, name: str) -> str:
        if part.path and os.path.isabs(part.path) and os.path.isfile(part.path):
            return part.path
        p = os.path.join(self._tmp.name, name)
        part.image.convert("RGB").save(p, format="PNG")
        return p

    def build_request(self, req: Request) -> tuple[dict[str, Any], tuple[int, int], list[list[int]]]:
        msg, query_size, sizes, _ = self._build(req)
        return msg, query_size, sizes

    def _build(self, req: Request) -> tuple[dict[str, Any], tuple[int, int], list[list[int]],
                                            tuple[float, float, float, float]]:
        """(worker request, query size, image sizes, region of the query the map covers)."""
        parts = [p for m in req.messages for p in m.parts]
        images = [p for p in parts if isinstance(p, ImagePart)]
        if not images:
            raise ConfigError("AnomalyGPT needs a query image")
        if len(images) > 2:
            raise ConfigError(f"AnomalyGPT takes a query and at most one reference image, got {len(images)} images")
        query = images[-1]
        ref = images[0] if len(images) == 2 else None
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", req.id)[:80]
        if self.prompt_mode == "native":
            text = self.question
        else:
            text = "\n".join(p.text for m in req.messages for p in m.parts if isinstance(p, TextPart))
        qsize = (int(query.image.size[0]), int(query.image.size[1]))
        if self.frame == "pad":
            qpath = self._padded_path(query, f"{safe}-query.png")
            rpath = self._padded_path(ref, f"{safe}-reference.png") if ref is not None else None
            side = float(max(qsize))
            region = (0.0, 0.0, side, side)
        else:
            qpath = self._image_path(query, f"{safe}-query.png")
            rpath = self._image_path(ref, f"{safe}-reference.png") if ref is not None else None
            region = crop_region(qsize)
        msg: dict[str, Any] = {
            "id": req.id,
            "query_image": qpath,
            "reference_image": rpath,
            "prompt": text,
            "max_new_tokens": int(req.config.max_new_tokens),
            "seed": int(req.config.seed) if req.config.seed is not None else request_seed(self.seed, req.id),
            "map_dir": self.map_dir,
        }
        if not req.config.greedy:  # greedy: AnomalyGPT samples anyway, with the worker's defaults
            msg["temperature"] = float(req.config.temperature)
            if req.config.top_p is not None:
                msg["top_p"] = float(req.config.top_p)
        sizes = [[int(i.image.size[0]), int(i.image.size[1])] for i in images]
        return msg, qsize, sizes, region

    def _padded_path(self, part: ImagePart, name: str) -> str:
        p = os.path.join(self._tmp.name, name)
        pad_square(part.image).save(p, format="PNG")
        return p

    def reply_to_response(self, reply: dict[str, Any], query_size: tuple[int, int], sizes: list[list[int]],
                          latency_s: float, region: tuple[float, float, float, float] | None = None) -> Response:
        if region is None:
            region = crop_region(query_size) if self.frame == "crop" else (0.0, 0.0, float(max(query_size)),
                                                                         float(max(query_size)))
        if reply.get("error"):
            return Response(text=None, status="error", error=f"worker: {str(reply['error'])[:400]}",
                            image_sizes=sizes, latency_s=latency_s)
        sentence = reply.get("text")
        if not isinstance(sentence, str):
            return Response(text=None, status="error", error="worker reply has no text", image_sizes=sizes,
                            latency_s=latency_s)
        decision, location = parse_sentence(sentence)
        boxes: list = []
        if decision:
            if reply.get("anomaly_map") is not None:
                try:
                    amap = normalise_map(decode_map(reply["anomaly_map"], allowed_dir=self.map_dir), self.normalize)
                except WorkerError as exc:
                    return Response(text=None, status="error", error=str(exc), image_sizes=sizes, latency_s=latency_s)
                boxes = map_boxes(amap, self.threshold, region, query_size, min_area=self.min_area,
                                  nms_iou=self.nms_iou)
            if not boxes and self.location_fallback and location:
                boxes = [location_box(location, query_size)]
        usage = None
        if isinstance(reply.get("usage"), dict):
            u = reply["usage"]
            usage = Usage(int(u.get("prompt_tokens", 0) or 0), int(u.get("completion_tokens", 0) or 0))
        return Response(text=answer_text(sentence, decision, boxes, self.label), status="ok", usage=usage,
                        latency_s=latency_s, image_sizes=sizes)

    def sent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Boxes come back in original pixels: the frame is the original image."""
        return int(size[0]), int(size[1])

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        with self._lock:
            return [self._one(r) for r in requests]

    def _one(self, req: Request) -> Response:
        t0 = time.perf_counter()
        try:
            msg, query_size, sizes, region = self._build(req)
        except (ConfigError, OSError) as exc:
            return Response(text=None, status="error", error=str(exc))
        if msg["reference_image"] and self.calibration is None and not self.threshold_given \
                and not self._warned_uncalibrated:
            self._warned_uncalibrated = True
            print(f"warning: anomalygpt: one-shot maps are 1 - cosine similarity, not probabilities: threshold "
                  f"{self.threshold} is uncalibrated; pass --option calibration=DIR (held-out normal images)",
                  file=sys.stderr)
        try:
            reply = self._ask(msg)
        except WorkerError as exc:
            return Response(text=None, status="error", error=f"AnomalyGPT worker: {exc}", image_sizes=sizes,
                            latency_s=time.perf_counter() - t0)
        try:
            return self.reply_to_response(reply, query_size, sizes, time.perf_counter() - t0, region)
        finally:
            self._drop_maps()

    def _ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One request to the worker (started or restarted as needed); temporary files removed after."""
        try:
            worker = self._ensure_worker()
            return worker.ask(msg, self.timeout_s)
        except WorkerError:
            if self._worker is not None:
                self._worker.kill()  # a worker that timed out may still be busy: never reuse it
                self._worker = None
            raise
        finally:
            for key in ("query_image", "reference_image"):
                p = msg.get(key)
                if p and p.startswith(self._tmp.name):
                    try:
                        os.remove(p)
                    except OSError:
                        pass

    def _drop_maps(self) -> None:
        """Remove the map files a worker left in the map folder (after they were read)."""
        for name in os.listdir(self.map_dir):
            try:
                os.remove(os.path.join(self.map_dir, name))
            except OSError:
                pass

    # -- one-shot threshold calibration ----------------------------------------------------------
    def calibrate(self, directory: str, quantile: float = 1.0) -> float:
        """Set the threshold from held-out normal images (see the module docstring); returns it.

        Each image is asked one-shot against the next image of its folder; its score is the map's
        maximum (after ``normalize``), the value a threshold must exceed for the image to get no box.
        The detectors' fair rule then takes, per folder, the ``quantile`` of those scores, the median
        over folders, and the next grid value above it.
        """
        from PIL import Image

        from mmrbench.vision.thresholds import GRID, fair_threshold

        groups = calibration_groups(directory)
        scores: dict[str, list[float]] = {}
        with self._lock:
            for g, files in groups.items():
                for i, path in enumerate(files):
                    ref = files[(i + 1) % len(files)]
                    with Image.open(path) as q, Image.open(ref) as r:
                        query, reference = q.convert("RGB"), r.convert("RGB")
                    req = Request(f"calibration-{g}-{i}", [Message("user", [
                        ImagePart(reference, path=os.path.abspath(ref)), ImagePart(query, path=os.path.abspath(path)),
                        TextPart(self.question)])], GenerationConfig(max_new_tokens=64))
                    msg, _, _, _ = self._build(req)
                    try:
                        reply = self._ask(msg)
                    except WorkerError as exc:
                        raise ConfigError(f"calibration: {path}: AnomalyGPT worker: {exc}") from None
                    if reply.get("error") or reply.get("anomaly_map") is None:
                        raise ConfigError(f"calibration: {path}: worker returned no map "
                                          f"({str(reply.get('error'))[:200]})")
                    try:
                        amap = normalise_map(decode_map(reply["anomaly_map"], allowed_dir=self.map_dir),
                                             self.normalize)
                    except WorkerError as exc:
                        raise ConfigError(f"calibration: {path}: {exc}") from None
                    finally:
                        self._drop_maps()
                    scores.setdefault(g, []).append(round(float(amap.max()), 6))
        t = fair_threshold(scores, quantile)
        self.threshold = float(t)
        self.calibration = {
            "dir": str(directory), "images": sum(len(v) for v in scores.values()), "quantile": quantile,
            "rule": f"fair threshold over {sum(len(v) for v in scores.values())} held-out normals "
                    f"(per folder quantile {quantile:g} of map maxima, median over {len(scores)} folder(s), "
                    f"next value of {GRID[0]:g}..{GRID[-1]:g} above)",
            "per_folder": {g: round(float(np.quantile(v, quantile)), 6) for g, v in sorted(scores.items())},
        }
        return self.threshold


def _looks_like_command(model: str) -> bool:
    return bool(model) and (any(c.isspace() for c in model.strip()) or os.path.isfile(model.split()[0]))
