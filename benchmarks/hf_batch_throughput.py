"""Batched ``hf`` generation (left padding) against one sample at a time, on the tiny Qwen2.5-VL.

Runs the real pipeline (``run_eval`` with the ``hf`` provider: images decoded while requests are
built, the processor's chat template, ``model.generate``) over the same samples at batch size 1 and
at batch size B, checks that greedy decoding gave the same answers, and prints samples per second
and the ratio, both measured in this one run. Target (issue #13): >= 3x at B = 8.

    python benchmarks/hf_batch_throughput.py [--samples 48] [--batch 8] [--new-tokens 24] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--side", type=int, default=96, help="image side in pixels")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()

    import torch

    from mmrbench.adapters.hf_local import HFModel
    from mmrbench.cards import parse_spec, with_overrides
    from mmrbench.predictions import read_predictions
    from mmrbench.runner import EvalOptions, run_eval
    from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir
    from runner_throughput import make_manifest

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_manifest(Path(tmp) / "data", args.samples, args.side)
        path = tiny_qwen25vl_dir(Path(tmp) / "models")
        from mmrbench.adapters.base import GenerationConfig
        model = HFModel(str(path), sampling=GenerationConfig(max_new_tokens=args.new_tokens))
        model.close = lambda: None  # one loaded model serves every run below (run_eval closes its model)
        card = with_overrides(parse_spec(f"hf:{path}"), sampling={"max_new_tokens": args.new_tokens,
                                                                   "temperature": 0.0})
        # warm-up (first generate call allocates and compiles kernels)
        model.batch_size = args.batch
        run_eval(card, manifest, Path(tmp) / "warm", EvalOptions(limit=args.batch, progress=False, quiet=True),
                 model=model)
        rates, answers, ends = {}, {}, {}
        for b in (1, args.batch):
            model.batch_size = b
            out = Path(tmp) / f"b{b}"
            t0 = time.perf_counter()
            run_eval(card, manifest, out, EvalOptions(progress=False, quiet=True), model=model)
            ends[b] = time.perf_counter() - t0
            preds = read_predictions(out / "predictions.jsonl")
            assert all(p.status != "error" for p in preds), [p.error for p in preds if p.status == "error"][:1]
            # the dispatch phase (first request built to last answer written), as runner_throughput
            # measures it: scoring and result.json at the end cost the same at any batch size
            rates[b] = len(preds) / json.loads((out / "run.json").read_text())["wall_s"]
            answers[b] = {p.id: p.response for p in preds}
        same = answers[1] == answers[args.batch]
        print(f"tiny Qwen2.5-VL, {args.samples} samples, two {args.side}-px images each, greedy, "
              f"{args.new_tokens} new tokens max, torch threads={args.threads}")
        for b in (1, args.batch):
            print(f"batch {b:>3}: {rates[b]:7.2f} samples/s   (end to end incl. scoring: {ends[b]:.2f} s)")
        print(f"ratio batch {args.batch} / batch 1: {rates[args.batch] / rates[1]:.2f}x; "
              f"same answers under greedy decoding: {'yes' if same else 'NO'}")
        if not same:
            diff = [k for k in answers[1] if answers[1][k] != answers[args.batch].get(k)]
            print(f"  {len(diff)} answers differ, e.g. {diff[:3]}")


if __name__ == "__main__":
    main()
