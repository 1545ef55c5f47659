"""Time the scorer on a benchmark-sized run (130,000 samples, the full MMR-AD size).

Target (issue 2): under 10 s of CPU time on one core (process time, so a busy machine does not skew it), from files on disk to the Table-4 rows, including
reading the manifest and the predictions and parsing every answer.

    python benchmarks/scoring_speed.py [--n 130000]
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

from mmrbench.data.manifest import read_manifest, write_manifest  # noqa: E402
from mmrbench.data.schema import Box, Sample  # noqa: E402
from mmrbench.predictions import Prediction, read_predictions, write_predictions  # noqa: E402
from mmrbench.scoring import score_predictions  # noqa: E402


def make(n: int, rng: random.Random):
    subs = ["MVTecAD", "VisA", "MVTec3D", "MPDD"]
    samples, preds = [], []
    for i in range(n):
        sub = subs[i % 4]
        cat = f"cat{(i // 4) % 12}"
        anomalous = rng.random() < 0.6
        boxes = []
        if anomalous:
            for _ in range(rng.choice((1, 1, 2, 3))):
                x, y = rng.randrange(0, 400), rng.randrange(0, 400)
                boxes.append(Box(x, y, x + rng.randrange(10, 100), y + rng.randrange(10, 100), "scratch"))
        samples.append(Sample(f"s{i}", sub, cat, "test", f"img/{i}.png", "anomalous" if anomalous else "normal",
                              512, 512, "img/ref.png", boxes))
        think = "<think>" + "The surface of the sample shows a region that differs from the reference. " * 4 + "</think>"
        r = rng.random()
        if r < 0.05:
            text = "I am not sure."
        elif rng.random() < 0.7 and anomalous or r < 0.15:
            bs = [(b.x1 + rng.randrange(-5, 6), b.y1 + rng.randrange(-5, 6), b.x2 + rng.randrange(-5, 6), b.y2)
                  for b in boxes] or [(10, 10, 60, 60)]
            body = ", ".join(f"{{'bbox_2d': [{a}, {b_}, {c}, {d}], 'label': 'scratch'}}" for a, b_, c, d in bs)
            text = f"{think}<answer>Yes. {body}</answer>"
        else:
            text = f"{think}<answer>No.</answer>"
        preds.append(Prediction(f"s{i}", text, image_sizes=[[512, 512], [512, 512]], convention="pixel"))
    return samples, preds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=130_000)
    args = ap.parse_args()
    samples, preds = make(args.n, random.Random(0))
    with tempfile.TemporaryDirectory() as d:
        write_manifest(f"{d}/manifest.jsonl", samples)
        write_predictions(f"{d}/predictions.jsonl", preds)
        t0 = time.process_time()
        manifest = read_manifest(f"{d}/manifest.jsonl", check_files=False)
        t1 = time.process_time()
        loaded = read_predictions(f"{d}/predictions.jsonl")
        t2 = time.process_time()
        report = score_predictions(manifest.select(split="test"), loaded)
        t3 = time.process_time()
    print(report.render("table"))
    print(f"\nsamples: {args.n}")
    print(f"read manifest    {t1 - t0:6.2f} s")
    print(f"read predictions {t2 - t1:6.2f} s")
    print(f"parse + score    {t3 - t2:6.2f} s")
    total = t3 - t0
    print(f"total            {total:6.2f} s  (target < 10 s on one core: {'OK' if total < 10 else 'MISSED'})")


if __name__ == "__main__":
    main()
