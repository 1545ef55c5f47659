"""Time to generate the bundled synthetic benchmark (targets: small < 3 s, default < 30 s on 2 cores).

Usage: python benchmarks/synth_speed.py
"""
from __future__ import annotations

import tempfile
import time

from mmrbench.data.synth import generate


def main() -> None:
    for scale in ("small", "default"):
        with tempfile.TemporaryDirectory() as tmp:
            t, c = time.perf_counter(), time.process_time()
            generate(tmp, seed=0, scale=scale)
            print(f"{scale:8s} wall {time.perf_counter() - t:6.2f} s   cpu (all threads) {time.process_time() - c:6.2f} s")


if __name__ == "__main__":
    main()
