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

import os
import re
import shlex
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

import numpy as np

from mmrbench.adapters.base import (GenerationConfig, ImagePart, Message, ModelAPI, Request, Response, TextPart,
                                    Usage)
from mmrbench.errors import ConfigError
from mmrbench.adapters.anomalygpt_maps import (  # re-exported: the names tests and tools use
    IMAGE_SUFFIXES,
    LOCATIONS,
    MAX_MAP_SIDE,
    NATIVE_QUESTION,
    PROTOCOL,
    WORKER_ENV,
    WorkerError,
    answer_text,
    calibration_groups,
    crop_region,
    decode_map,
    encode_map,
    location_box,
    map_boxes,
    normalise_map,
    pad_square,
    parse_sentence,
    request_seed,
)

from mmrbench.adapters.anomalygpt_worker import Worker


__all__ = ["AnomalyGPTModel", "IMAGE_SUFFIXES", "LOCATIONS", "MAX_MAP_SIDE", "NATIVE_QUESTION", "PROTOCOL", "WORKER_ENV", "Worker", "WorkerError", "answer_text", "calibration_groups", "crop_region", "decode_map", "encode_map", "location_box", "map_boxes", "normalise_map", "pad_square", "parse_sentence", "request_seed"]

class AnomalyGPTModel(ModelAPI):
    provider = "anomalygpt"
    convention = "pixel"
    fixed_convention = True  # boxes come from the map, in original pixels
    max_concurrency = 1
    batch_size = 1

    def __init__(self, model: str, *, worker: str | None = None, cwd: str | None = None,
                 env: dict[str, str] | None = None, timeout_s: float = 600.0, startup_timeout_s: float = 1800.0,
                 threshold: float | None = None, normalize: str = "none", min_area: int = 0, nms_iou: float = 0.5,
                 prompt: str = "native", question: str = NATIVE_QUESTION, location_fallback: bool = False,
                 label: str = "anomaly", max_restarts: int = 3, sampling: GenerationConfig | None = None,
                 frame: str = "crop", calibration: str | None = None, calibration_quantile: float = 1.0,
                 seed: int = 0, convention: str | None = None, **_ignored: Any):
        super().__init__(model, convention=convention)
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
            msg["temperature"] = float(req.config.temperature or 0.0)  # not greedy: a positive number
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
