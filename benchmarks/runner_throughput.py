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
    python benchmarks/runner_throughput.py --side 512 --concurrency 128 --samples 1024 --processes 1,2

``--processes 1,2`` measures each K with threads in this process and with two sender processes
(``eval --processes``); the CPU column then includes the senders' (their start-up too).

``--rate-limit R`` makes the server admit R requests per second (a token bucket holding one second's
worth) and answer the rest 429 with Retry-After; the run then reports its rate as a
fraction of R and the share of HTTP requests answered 429, with adaptive concurrency (AIMD) and,
for contrast, without it. Target: >= 0.85 of R with < 5 % 429s.

    python benchmarks/runner_throughput.py --rate-limit 20 --concurrency 32 --samples 400
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
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
    ap.add_argument("--processes", default="1", help="comma-separated sender process counts (eval --processes)")
    ap.add_argument("--in-process-server", action="store_true",
                    help="run the server in this process (it then competes with the runner for the GIL)")
    ap.add_argument("--recording-server", action="store_true",
                    help="the server parses every body and keeps it (the test server's default)")
    ap.add_argument("--rate-limit", type=float, default=None, metavar="R",
                    help="server admits R requests/s and answers 429 beyond (see the module doc)")
    args = ap.parse_args()
    if args.rate_limit:
        return rate_limited(args)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_manifest(Path(tmp) / "data", args.samples, args.side)
        with _server(args.latency, args.in_process_server, not args.recording_server) as base_url:
            where = "in-process" if args.in_process_server else "separate process"
            print(f"{args.samples} samples, {args.side}px images, server latency L={args.latency:g} s ({where})")
            print(f"{'K':>4} {'procs':>5} {'wall s':>8} {'ideal s':>8} {'samples/s':>10} {'ideal K/L':>10} {'fraction':>9} "
                  f"{'CPU ms/req':>10}")
            for k, procs in [(int(v), int(p)) for v in args.concurrency.split(",") if v.strip()
                             for p in args.processes.split(",") if p.strip()]:
                n = min(args.samples, max(4 * k, int(8 * k / args.latency)))
                card = with_overrides(parse_spec("openai:bench-model"), base_url=base_url, concurrency=k)
                out = Path(tmp) / f"run-k{k}-p{procs}"
                t0, c0 = time.perf_counter(), _cpu_s()
                run_eval(card, manifest, out, EvalOptions(limit=n, concurrency=k, progress=False, quiet=True,
                                                          processes=procs))
                wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
                run = json.loads((out / "run.json").read_text())
                assert run["status_counts"]["ok"] == n, run["status_counts"]
                rate = n / run["wall_s"]  # dispatch phase: first request to last line written
                ideal = k / args.latency
                print(f"{k:>4} {procs:>5} {run['wall_s']:>8.2f} {n / ideal:>8.2f} {rate:>10.1f} {ideal:>10.1f} {rate / ideal:>9.2f} "
                      f"{1000 * cpu / n:>10.1f}   (end to end incl. scoring: {wall:.2f} s)")


def rate_limited(args) -> None:
    r = args.rate_limit
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_manifest(Path(tmp) / "data", args.samples, args.side)
        extra = ("--rate-limit", str(r), "--burst", str(max(1.0, r)))
        print(f"{args.samples} samples, {args.side}px images, L={args.latency:g} s, server admits {r:g} requests/s "
              f"(burst {max(1.0, r):g}); 429s carry Retry-After")
        print(f"{'K':>4} {'procs':>5} {'adaptive':>8} {'wall s':>8} {'samples/s':>10} {'of limit':>9} {'HTTP reqs':>10} "
              f"{'429s':>6} {'429 %':>6} {'lowest K':>9} {'gave up':>10}")
        for k, procs in [(int(v), int(p)) for v in args.concurrency.split(",") if v.strip()
                         for p in args.processes.split(",") if p.strip()]:
            for adaptive in (True, False):
                # a fresh server per run: each starts with a full bucket
                with _server(args.latency, False, True, *extra) as base_url:
                    card = with_overrides(parse_spec("openai:bench-model"), base_url=base_url, concurrency=k)
                    out = Path(tmp) / f"rl-k{k}-p{procs}-{adaptive}"
                    run_eval(card, manifest, out, EvalOptions(concurrency=k, progress=False, quiet=True,
                                                              adaptive=adaptive, processes=procs))
                run = json.loads((out / "run.json").read_text())
                preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
                n = len(preds)
                n_ok = run["status_counts"]["ok"]
                assert n == args.samples and (n_ok == n or not adaptive), run["status_counts"]
                attempts = sum(int(p.get("attempts") or 1) for p in preds)
                # every attempt but an answer's last was a 429 (nothing else fails on loopback); an error line
                # is a sample whose attempts all were (without AIMD, six 429s in a row give up)
                n429 = attempts - n_ok
                rate = n_ok / run["wall_s"]
                lowest = run.get("concurrency", {}).get("lowest", k)
                print(f"{k:>4} {procs:>5} {'AIMD' if adaptive else 'off':>8} {run['wall_s']:>8.2f} {rate:>10.1f} {rate / r:>9.2f} "
                      f"{attempts:>10} {n429:>6} {100 * n429 / attempts:>5.1f}% {lowest:>9} {n - n_ok:>10}")


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the sender processes of --processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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
