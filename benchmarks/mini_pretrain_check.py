"""Grounding pretraining of the mini base, on its own: how well a setting makes the base see and place marks.

    python benchmarks/mini_pretrain_check.py --out /tmp/ptc --steps 1500 --token-layer 2 [--seed 0]

Builds the random mini base that ``table5_mini.py --layers 4`` builds (same data, tokenizer and seed),
pretrains it with :class:`mmrbench.testing.mini_pretrain.PretrainConfig` as the flags say, and prints the
grounding check (:func:`~mmrbench.testing.mini_pretrain.grounding_eval`: presence, marks found at IoU 0.1 /
0.5) every ``--eval-every`` steps on 32 fresh images and at the end on ``--eval-n``. Only generated marks
are read, never the benchmark's held-out split, so settings can be chosen here. The report (losses and
checks) is written to ``--out``/report.json; nothing is cached, every run trains.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from mmrbench.testing.mini_pretrain import PretrainConfig

    d = PretrainConfig(0)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/mini_pretrain_check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--image-side", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=d.batch)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--curriculum", type=float, default=d.curriculum)
    ap.add_argument("--token-aux", type=float, default=d.token_aux)
    ap.add_argument("--token-layer", type=int, default=d.token_layer, help="0 = the last decoder layer")
    ap.add_argument("--coord-aux", type=float, default=d.coord_aux, help="weight of the coordinate loss (0 = off)")
    ap.add_argument("--train-vision", action="store_true")
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--eval-n", type=int, default=64)
    a = ap.parse_args(argv)

    import torch
    import transformers

    from mmrbench.adapters.hf_inputs import load_processor
    from mmrbench.testing.mini_pretrain import grounding_eval, run_pretraining

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.spec_from_file_location("mini", ROOT / "benchmarks" / "mini_anomaly_r1.py")
    assert spec is not None and spec.loader is not None
    mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini)
    train_m, *_ = mini.make_data(out, 0, "large", ["foam", "carpet"], 180)  # table5_mini's data, for its tokenizer
    base = mini.build_model(out, a.seed, a.image_side, 128, a.layers, train_m, "default", None)
    model = transformers.AutoModelForImageTextToText.from_pretrained(str(base))
    proc = load_processor(base)
    config = PretrainConfig(a.steps, batch=a.batch, lr=a.lr, curriculum=a.curriculum, token_aux=a.token_aux,
                            train_vision=a.train_vision, token_layer=a.token_layer,
                            coord_aux=a.coord_aux)
    print(f"[{time.strftime('%H:%M:%S')}] {config}", flush=True)
    t0 = time.perf_counter()
    losses = run_pretraining(model, proc, config, side=a.image_side, seed=a.seed, eval_every=a.eval_every,
                             log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    check = grounding_eval(model, proc, side=a.image_side, n=a.eval_n, seed=a.seed)
    wall = time.perf_counter() - t0
    print(f"end: presence {check['presence']:.1%}, IoU 0.1 {check['recall_iou01']:.1%}, "
          f"IoU 0.5 {check['recall_iou05']:.1%} on {check['n']} images; {wall / 60:.1f} min; {check['samples']}")
    (out / "report.json").write_text(json.dumps({"config": vars(a), "check": check, "wall_s": wall,
                                                 "loss": [round(x, 5) for x in losses]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
