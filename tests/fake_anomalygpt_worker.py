"""A stand-in AnomalyGPT worker speaking protocol ``mmrbench-anomalygpt/1`` (see docs/local-models.md).

It runs the protocol loop of the real worker script (``tools/anomalygpt_worker.py: serve``, which
also checks the sampling fields as transformers does) with a small honest detector instead of
AnomalyGPT, behaving as AnomalyGPT does where the harness depends on it (its repository at commit
f21c51b):

* frame: images are seen as ImageBind's ``load_and_transform_vision_data`` sees them -- shorter side
  resized to 224 (bicubic), then a 224x224 centre crop -- so the map covers the central square of a
  non-square query, and what lies outside it is invisible;
* map meaning: with a reference the map is ``0.55 + 0.45 * |query - reference|`` in grey levels, a
  stand-in for AnomalyGPT's 1 - cosine similarity, whose floor on normal pairs is well above 0 (so a
  fixed 0.5 threshold is wrong and a calibrated one is needed); without a reference it is a
  probability-like ``query > 0.9``;
* sampling: every reply is sampled (the phrasing of the sentence and a small noise on the map),
  from the request's ``seed`` when it has one and from fresh entropy when not -- AnomalyGPT's
  ``generate`` hard-codes ``do_sample=True`` and seeds nothing.

The sentence says Yes when the grey difference (or the zero-shot map) peaks above 0.5 and names the
third of the crop holding the peak, like AnomalyGPT's sentences.

Behaviour switches for the tests, by request id prefix (the adapter names its temporary image files
after the id, so the query file name starts with it too): ``crash`` (exits mid-request),
``hang`` (never answers), ``noise`` (prints non-protocol lines to stdout first), ``error`` (answers
with an error), ``npy`` (sends the map as a .npy path in the request's ``map_dir``), ``outside``
(a .npy path outside ``map_dir``), ``symlink`` (a link inside ``map_dir`` to a .npy outside it),
``badmap`` (a map with the wrong byte count), ``stale`` (first sends a reply for another id). Start
switches: ``--fail-start``, ``--wrong-protocol``, ``--ready-delay S``, ``--count-file F`` (appends
one line per start), ``--log F`` (appends each request's JSON).
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("anomalygpt_worker", ROOT / "tools" / "anomalygpt_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)  # type: ignore[union-attr]

GRID = [["top left", "top", "top right"], ["left", "center", "right"], ["bottom left", "bottom", "bottom right"]]
PHRASES = ["Yes, there is an anomaly in the image, at the {} of the image.",
           "Yes, there is an anomaly in the image at the {} of the image."]
#: the one-shot map's floor on identical images (AnomalyGPT's 1 - cos never reaches 0 on real pairs)
ONE_SHOT_FLOOR = 0.55


def grey224(path: str) -> np.ndarray:
    """Grey levels in [0, 1] as AnomalyGPT sees the image: shorter side to 224 (bicubic), centre crop."""
    im = Image.open(path).convert("L")
    w, h = im.size
    if w <= h:
        nw, nh = 224, int(224 * h / w)
    else:
        nw, nh = int(224 * w / h), 224
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - 224) / 2.0)), int(round((nh - 224) / 2.0))
    return np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0


def detector(query: str, reference: str | None, prompt: str, params: dict) -> tuple[str, np.ndarray | None]:
    name = os.path.basename(query)
    if name.startswith("crash"):
        print("fatal: simulated crash while reading " + name, file=sys.stderr, flush=True)
        os._exit(3)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("error"):
        raise RuntimeError("CUDA out of memory (simulated)")
    rng = np.random.default_rng(params.get("seed"))  # None: fresh entropy, as unseeded sampling
    q = grey224(query)
    if reference:
        diff = np.abs(q - grey224(reference))
        amap = np.clip(ONE_SHOT_FLOOR + (1 - ONE_SHOT_FLOOR) * diff, 0.0, 1.0)
    else:
        diff = (q > 0.9).astype(np.float32)
        amap = diff.copy()
    amap = np.clip(amap + rng.uniform(-0.01, 0.01, amap.shape), 0.0, 1.0).astype(np.float32)
    if float(diff.max()) <= 0.5:
        return "No, there is no anomaly in the image.", amap
    r, c = np.unravel_index(int(np.argmax(diff)), diff.shape)
    phrase = PHRASES[int(rng.integers(len(PHRASES)))]
    return phrase.format(GRID[min(r * 3 // 224, 2)][min(c * 3 // 224, 2)]), amap


class In:
    """Reads requests, remembering each one's ``map_dir`` for :class:`Out`."""

    def __init__(self, real, log: str | None):
        self.real, self.log, self.map_dirs = real, log, {}

    def __iter__(self):
        for line in self.real:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                self.map_dirs[str(obj.get("id"))] = obj.get("map_dir")
                if self.log:
                    with open(self.log, "a") as f:
                        f.write(json.dumps(obj) + "\n")
            yield line


class Out:
    """Writes protocol lines, applying the per-request switches to the framing itself."""

    def __init__(self, real, inp: In):
        self.real, self.inp = real, inp
        self._tmp: str | None = None

    @property
    def tmp(self) -> str:
        """A folder for .npy maps, made only when a request needs one and removed at exit (a worker
        that is killed leaves at most this one folder behind)."""
        if self._tmp is None:
            import atexit
            import shutil
            self._tmp = tempfile.mkdtemp(prefix="fake-agpt-")
            atexit.register(shutil.rmtree, self._tmp, True)
        return self._tmp

    def _npy(self, rid: str, m: dict, where: str) -> str:
        arr = np.frombuffer(base64.b64decode(m["data"]), dtype="<f2").reshape(m["shape"])
        p = os.path.join(where, rid + ".npy")
        np.save(p, arr.astype(np.float32))
        return p

    def write(self, s: str) -> None:
        line = s.strip()
        if line:
            obj = json.loads(line)
            rid = str(obj.get("id") or "")
            map_dir = self.inp.map_dirs.get(rid)
            if rid.startswith("noise"):
                self.real.write("Loading checkpoint shards: 100%\n[not json]\n")
            if rid.startswith("stale"):
                self.real.write(json.dumps({"id": "someone-else", "text": "No.", "anomaly_map": None, "error": None}) + "\n")
            if obj.get("anomaly_map"):
                if rid.startswith("npy"):
                    obj["anomaly_map"] = self._npy(rid, obj["anomaly_map"], map_dir or self.tmp)
                elif rid.startswith("outside"):
                    obj["anomaly_map"] = self._npy(rid, obj["anomaly_map"], self.tmp)
                elif rid.startswith("symlink"):
                    target = self._npy(rid, obj["anomaly_map"], self.tmp)
                    link = os.path.join(map_dir or self.tmp, rid + ".npy")
                    os.symlink(target, link)
                    obj["anomaly_map"] = link
                elif rid.startswith("badmap"):
                    obj["anomaly_map"]["data"] = obj["anomaly_map"]["data"][:100]
            s = json.dumps(obj) + "\n"
        self.real.write(s)

    def flush(self) -> None:
        self.real.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fail-start", action="store_true")
    ap.add_argument("--wrong-protocol", action="store_true")
    ap.add_argument("--ready-delay", type=float, default=0.0)
    ap.add_argument("--count-file", default=None)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    if args.count_file:
        with open(args.count_file, "a") as f:
            f.write("start\n")
    if args.fail_start:
        print("ImportError: No module named 'model.openllama'", file=sys.stderr)
        return 2
    time.sleep(args.ready_delay)
    inp = In(sys.stdin, args.log)
    out = Out(sys.stdout, inp)
    if args.wrong_protocol:
        worker.PROTOCOL = "anomalygpt-other/9"
    worker.serve(detector, inp, out, info=dict(worker.READY_INFO, model="fake-anomalygpt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
