"""Fit and inference time per image of PaDiM and PatchCore, against the backbone's own forward time.

    python benchmarks/baselines_speed.py                     # one category of the small synthetic benchmark
    python benchmarks/baselines_speed.py --data MANIFEST --category carpet --set model.image_size=224

The floor of any feature-based detector is the backbone forward pass over the layers it uses; the
ratio inference / forward says what the detector adds on top (target <= 1.5x). Images are decoded
before timing, so file I/O is in neither number; all times are measured in this one process, in the
same thread setting, after a warm-up pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _set(recipe: dict, assignment: str) -> None:
    key, _, raw = assignment.partition("=")
    try:
        val = json.loads(raw)
    except json.JSONDecodeError:
        val = raw
    cur = recipe
    for p in key.split(".")[:-1]:
        cur = cur.setdefault(p, {})
    cur[key.split(".")[-1]] = val


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="manifest (default: generate the small synthetic benchmark)")
    ap.add_argument("--out", default="runs/baselines_speed")
    ap.add_argument("--category", default=None, help="category to time (default: the first with test images)")
    ap.add_argument("--methods", default="padim,patchcore")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import torch

    from mmrbench.vision.backbones import load_backbone
    from mmrbench.baselines.evaluate import build_detector
    from mmrbench.vision.features import load_image_tensor
    from mmrbench.baselines.recipes import resolve_recipe
    from mmrbench.data.manifest import read_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        mpath = Path(args.data)
    else:
        from mmrbench.data.synth import generate
        mpath = Path(args.out) / "synth_small" / "manifest.jsonl"
        if not mpath.exists():
            generate(mpath.parent, seed=0, scale="small", force=True)
    m = read_manifest(mpath)
    test_all = m.select(split="test")
    cat = args.category or test_all[0].category
    train = [s for s in m.samples if s.category == cat and s.split == "train" and s.label == "normal"]
    test = [s for s in test_all if s.category == cat]
    override: dict = {}
    for a in args.set:
        _set(override, a)
    rows = []
    for method in args.methods.split(","):
        rec = resolve_recipe(method, override or None)
        bb = load_backbone(rec["backbone"]["name"], rec["backbone"].get("weights"), seed=rec["backbone"]["seed"])
        size, bs = int(rec["model"]["image_size"]), int(rec["batch_size"])
        tr = torch.stack([load_image_tensor(m.resolve(s.image), size, sample_id=s.id) for s in train])
        te = torch.stack([load_image_tensor(m.resolve(s.image), size, sample_id=s.id) for s in test])
        layers = tuple(rec["model"]["layers"])
        batches = lambda x: [x[i:i + bs] for i in range(0, len(x), bs)]  # noqa: E731

        def forward():
            for x in batches(te):
                bb.features(x, layers)

        det = build_detector(method, bb, rec)
        forward()  # warm-up (allocator, oneDNN kernels)
        t0 = time.perf_counter()
        det.fit(batches(tr))
        fit_s = time.perf_counter() - t0

        def infer():
            for x in batches(te):
                det.score(x)

        infer()
        fwd_s = _best_of(forward, args.repeats)
        inf_s = _best_of(infer, args.repeats)
        rows.append({"method": method, "backbone": f"{bb.name} ({'pretrained' if bb.info['pretrained'] else 'random'})",
                     "image": size, "train imgs": len(train), "test imgs": len(test),
                     "fit ms/img": f"{1000 * fit_s / len(train):.0f}",
                     "forward ms/img": f"{1000 * fwd_s / len(test):.0f}",
                     "inference ms/img": f"{1000 * inf_s / len(test):.0f}",
                     "inference / forward": f"{inf_s / fwd_s:.2f}x"})
    from tabulate import tabulate
    print(f"category {cat}, {torch.get_num_threads()} threads", file=sys.stderr)
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
