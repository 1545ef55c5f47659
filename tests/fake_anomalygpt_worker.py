"""A stand-in AnomalyGPT worker speaking protocol ``mmrbench-anomalygpt/1`` (see docs/local-models.md).

It runs the protocol loop of the real worker script (``tools/anomalygpt_worker.py: serve``) with a
small honest detector instead of AnomalyGPT: the anomaly map is the grey-level difference between
query and reference (224x224, in [0, 1]); the sentence says Yes when the map peaks above 0.5 and
names the third of the image holding the peak, like AnomalyGPT's sentences.

Behaviour switches for the tests, by request id prefix (the adapter names its temporary image files
after the id, so the query file name starts with it too): ``crash`` (exits mid-request),
``hang`` (never answers), ``noise`` (prints non-protocol lines to stdout first), ``error`` (answers
with an error), ``npy`` (sends the map as a .npy path), ``badmap`` (a map with the wrong byte count),
``stale`` (first sends a reply for another id). Start switches: ``--fail-start``, ``--wrong-protocol``,
``--ready-delay S``, ``--count-file F`` (appends one line per start).
"""
from __future__ import annotations

import argparse
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


def grey224(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0


def detector(query: str, reference: str | None, prompt: str, params: dict) -> tuple[str, np.ndarray | None]:
    name = os.path.basename(query)
    if name.startswith("crash"):
        print("fatal: simulated crash while reading " + name, file=sys.stderr, flush=True)
        os._exit(3)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("error"):
        raise RuntimeError("CUDA out of memory (simulated)")
    q = grey224(query)
    amap = np.abs(q - grey224(reference)) if reference else (q > 0.9).astype(np.float32)
    peak = float(amap.max())
    if peak <= 0.5:
        return "No, there is no anomaly in the image.", amap
    r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
    return f"Yes, there is an anomaly in the image, at the {GRID[min(r * 3 // 224, 2)][min(c * 3 // 224, 2)]} of the image.", amap


class Out:
    """Writes protocol lines, applying the per-request switches to the framing itself."""

    def __init__(self, real):
        self.real = real
        self.tmp = tempfile.mkdtemp(prefix="fake-agpt-")

    def write(self, s: str) -> None:
        line = s.strip()
        if line:
            obj = json.loads(line)
            rid = str(obj.get("id") or "")
            if rid.startswith("noise"):
                self.real.write("Loading checkpoint shards: 100%\n[not json]\n")
            if rid.startswith("stale"):
                self.real.write(json.dumps({"id": "someone-else", "text": "No.", "anomaly_map": None, "error": None}) + "\n")
            if rid.startswith("npy") and obj.get("anomaly_map"):
                m = obj["anomaly_map"]
                arr = np.frombuffer(__import__("base64").b64decode(m["data"]), dtype="<f2").reshape(m["shape"])
                p = os.path.join(self.tmp, rid + ".npy")
                np.save(p, arr.astype(np.float32))
                obj["anomaly_map"] = p
            if rid.startswith("badmap") and obj.get("anomaly_map"):
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
    args = ap.parse_args()
    if args.count_file:
        with open(args.count_file, "a") as f:
            f.write("start\n")
    if args.fail_start:
        print("ImportError: No module named 'model.openllama'", file=sys.stderr)
        return 2
    time.sleep(args.ready_delay)
    out = Out(sys.stdout)
    if args.wrong_protocol:
        worker.PROTOCOL = "anomalygpt-other/9"
    worker.serve(detector, sys.stdin, out, info={"model": "fake-anomalygpt"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
