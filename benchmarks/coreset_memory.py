"""Peak memory of PatchCore's greedy coreset selection on 200,000 x 1,536 float32 features.

    python benchmarks/coreset_memory.py                  # 200k x 1536, ratio 0.1, first 500 centres
    python benchmarks/coreset_memory.py --centres 0      # the full selection (20,000 centres; slow on 2 cores)

The selection runs in a fresh child process so its peak resident set size (``ru_maxrss``) is the
selection's own: the 1.17 GiB feature matrix, the (n, 128) projection and a few n-vectors. Every
buffer is allocated before the first centre is chosen, so the peak does not grow with the number of
centres; ``--centres`` only bounds the run time (the full 20,000-centre run is reported with
``--centres 0``). The target is < 4 GiB; an n x n distance matrix would need 149 GiB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def child(n: int, dim: int, ratio: float, centres: int) -> None:
    import resource

    import torch

    from mmrbench.baselines.coreset import greedy_coreset

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = torch.Generator().manual_seed(0)
    feats = torch.empty(n, dim)
    for i in range(0, n, 20000):  # fill in chunks: no temporary copy of the whole matrix
        feats[i:i + 20000].normal_(generator=g)
    after_input = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    st: dict = {}
    sel = greedy_coreset(feats, ratio, proj_dim=128, seed=0, max_size=centres or None, stats=st)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "dim": dim, "ratio": ratio, "centres": int(len(sel)), "seconds": dt, **st,
                      "rss_before_kib": base, "rss_after_input_kib": after_input, "peak_rss_kib": peak}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--centres", type=int, default=500, help="stop after this many centres (0: all)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.n, args.dim, args.ratio, args.centres)
        return 0
    r = subprocess.run([sys.executable, __file__, "--child", "--n", str(args.n), "--dim", str(args.dim),
                        "--ratio", str(args.ratio), "--centres", str(args.centres)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return r.returncode
    d = json.loads(r.stdout.strip().splitlines()[-1])
    gib = 1024 ** 2
    full = int(-(-args.n * args.ratio // 1))
    print(f"features {d['n']:,} x {d['dim']:,} float32 = {d['n'] * d['dim'] * 4 / 1024 ** 3:.2f} GiB")
    print(f"coreset ratio {d['ratio']} -> {full:,} centres; ran {d['centres']:,}: projection to 128 dims "
          f"{d['projection_s']:.1f} s, selection {d['selection_s']:.1f} s "
          f"({1000 * d['selection_s'] / max(1, d['centres']):.1f} ms/centre)")
    print(f"peak RSS {d['peak_rss_kib'] / gib:.2f} GiB (interpreter+torch {d['rss_before_kib'] / gib:.2f} GiB, "
          f"after allocating the input {d['rss_after_input_kib'] / gib:.2f} GiB); "
          f"selection added {(d['peak_rss_kib'] - d['rss_after_input_kib']) / gib:.2f} GiB")
    ok = d["peak_rss_kib"] < 4 * gib
    print(f"target peak < 4 GiB: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
