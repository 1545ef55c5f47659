"""Runner throughput against a loopback OpenAI-compatible server with a fixed latency.

With latency L per request and concurrency K, an ideal runner answers K/L samples per second. This
measures the real pipeline (image loading, PNG + base64 encoding, the official openai SDK over HTTP,
fsync'ed predictions lines, progress accounting) and prints achieved throughput as a fraction of
K/L, and the runner process's CPU time per request (all threads: building requests, encoding,
the SDK, writing lines). Targets (issue #13): >= 0.9 of K/L at K=32 with 1024-px images and at
K=128 with 512-px images; <= 30 ms of client CPU per request at 1024 px.

The server runs in its own process and, by default, neither parses bodies nor keeps them (a real
server decodes images in native code; a Python one decoding 8 MB bodies would be the bottleneck
measured). ``--recording-server`` restores the test server's full parsing.

    python benchmarks/runner_throughput.py --latency 0.5 --concurrency 1,8,32 --samples 384
    python benchmarks/runner_throughput.py --side 1024 --samples 256
    python benchmarks/runner_throughput.py --side 512 --concurrency 128 --samples 1024
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402

from mmrbench.cards import parse_spec, with_overrides  # noqa: E402
from mmrbench.data.manifest import write_manifest  # noqa: E402
from mmrbench.data.schema import Sample  # noqa: E402
from mmrbench.runner import EvalOptions, run_eval  # noqa: E402


def make_manifest(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / "img/ref.png")
    samples = []
    for i in range(n):
        rel = f"img/q{i}.png"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / rel)
        samples.append(Sample(f"S/c{i % 4}/{i}", "S", f"c{i % 4}", "test", rel, "normal", side, side, reference="img/ref.png"))
    path = root / "manifest.jsonl"
    write_manifest(path, samples)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.5, help="server latency per request, seconds")
    ap.add_argument("--concurrency", default="32", help="comma-separated K values")
    ap.add_argument("--samples", type=int, default=384)
    ap.add_argument("--side", type=int, default=64, help="image side in pixels")
    ap.add_argument("--in-process-server", action="store_true",
                    help="run the server in this process (it then competes with the runner for the GIL)")
    ap.add_argument("--recording-server", action="store_true",
                    help="the server parses every body and keeps it (the test server's default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_manifest(Path(tmp) / "data", args.samples, args.side)
        with _server(args.latency, args.in_process_server, not args.recording_server) as base_url:
            where = "in-process" if args.in_process_server else "separate process"
            print(f"{args.samples} samples, {args.side}px images, server latency L={args.latency:g} s ({where})")
            print(f"{'K':>4} {'wall s':>8} {'ideal s':>8} {'samples/s':>10} {'ideal K/L':>10} {'fraction':>9} "
                  f"{'CPU ms/req':>10}")
            for k in [int(v) for v in args.concurrency.split(",") if v.strip()]:
                n = min(args.samples, max(4 * k, int(8 * k / args.latency)))
                card = with_overrides(parse_spec("openai:bench-model"), base_url=base_url, concurrency=k)
                out = Path(tmp) / f"run-k{k}"
                t0, c0 = time.perf_counter(), time.process_time()
                run_eval(card, manifest, out, EvalOptions(limit=n, concurrency=k, progress=False, quiet=True))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                run = json.loads((out / "run.json").read_text())
                assert run["status_counts"]["ok"] == n, run["status_counts"]
                rate = n / run["wall_s"]  # dispatch phase: first request to last line written
                ideal = k / args.latency
                print(f"{k:>4} {run['wall_s']:>8.2f} {n / ideal:>8.2f} {rate:>10.1f} {ideal:>10.1f} {rate / ideal:>9.2f} "
                      f"{1000 * cpu / n:>10.1f}   (end to end incl. scoring: {wall:.2f} s)")


@contextlib.contextmanager
def _server(latency: float, in_process: bool, light: bool = True, *extra: str):
    if in_process:
        with FakeOpenAIServer(lambda req: Reply("<answer>No.</answer>"), latency_s=latency, record=not light) as srv:
            yield srv.base_url
        return
    cmd = [sys.executable, str(REPO / "tests" / "fake_openai_server.py"), "--latency", str(latency), *extra]
    if light:
        cmd.append("--light")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
