"""SFT alone on a table5_mini base, scored on training images: does SFT learn to tell them apart at all?

    python benchmarks/table5_mini.py --out /tmp/t5l/p1 --seeds 1 --layers 4 --pretrain-steps 1500 ...  # builds the base
    python benchmarks/mini_sft_check.py --table5-out /tmp/t5l/p1 --seed 1 --head --steps 400 --out /tmp/sftc_head
    python benchmarks/mini_sft_check.py --table5-out /tmp/t5l/p1 --seed 1 --steps 400 --out /tmp/sftc_lora
    python benchmarks/mini_sft_check.py --table5-out /tmp/t5l/p1 --base /tmp/ptc/model --head --out /tmp/sftc_ptc

Trains the shipped ``sft`` recipe with table5_mini's settings on the base that ``table5_mini.py`` built under
``--table5-out`` (or any base of that data's tokenizer with ``--base``, e.g. one ``mini_pretrain_check.py
--save`` wrote), LoRA alone or with ``--head`` the output head trained fully too, then scores greedy answers
with the protocol's scorer on every fourth *training* image (``--n`` of them). It diagnoses a training
failure (a constant answer) without reading the held-out split, so it can inform settings. ``--held-out``
also scores the held-out split once, for a run whose settings are already fixed (an adapter already in
``--out`` is reused, not retrained).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table5-out", required=True, help="a table5_mini.py --out folder holding the seed's base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", help="the base model folder (default: the seed's base under --table5-out)")
    ap.add_argument("--head", action="store_true", help="train the output head fully beside LoRA")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--attn-loss", type=float, default=0.0,
                    help="sft.attention_loss_weight: head 0 looks at the defect while the box is written (0 = off)")
    ap.add_argument("--attn-layer", type=int, default=0, help="sft.attention_loss_layer (1-based; 0 = the last)")
    ap.add_argument("--held-out", action="store_true",
                    help="also score the held-out split once, after training (a measurement; choose nothing on it)")
    ap.add_argument("--n", type=int, default=120, help="training images scored (every fourth of the pool)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import torch

    from mmrbench.data.manifest import read_manifest, write_manifest

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("table5_mini", ROOT / "benchmarks" / "table5_mini.py")
    assert spec is not None and spec.loader is not None
    t5 = importlib.util.module_from_spec(spec)
    sys.modules["table5_mini"] = t5  # its dataclasses look their module up
    spec.loader.exec_module(t5)
    mini = t5._mini()
    src, out = Path(a.table5_out), Path(a.out)
    train_m, _, _, eval_m, _ = mini.make_data(src, 0, "large", ["foam", "carpet"], 180)
    bases = [Path(a.base)] if a.base else sorted((src / f"seed{a.seed}").glob("model-v3-*"))
    if not bases or not (bases[-1] / "config.json").exists():
        raise SystemExit(f"no base model at {a.base or src / f'seed{a.seed}'}: run table5_mini.py with --out {src} "
                         "first, or name one with --base")
    base = t5.mini_overrides(bases[-1], train_m, mini.trained_modules("frozen", False, head=a.head), a.seed)
    if a.attn_loss:
        base |= {"sft.attention_loss_weight": a.attn_loss, "sft.attention_loss_layer": a.attn_layer}
    adapter = t5.train_sft("sft", base, argparse.Namespace(sft_steps=a.steps, sft_lr=a.lr), a.seed, out / "sft")
    # training images, marked as the split the harness scores; their files through links beside the manifest
    samples = [dataclasses.replace(s, split="test") for s in read_manifest(train_m).samples[::4][: a.n]]
    manifest = out / "train_sample.jsonl"
    write_manifest(manifest, samples)
    for sub in ("images", "masks"):
        if not (out / sub).exists():
            (out / sub).symlink_to(train_m.parent / sub)
    r = t5.evaluate(adapter, manifest, "default", "no-rl-sft", out / "eval", 96)
    answers = [json.loads(line)["response"] for line in (out / "eval" / "predictions.jsonl").open()]
    yes = sum("<answer>Yes" in t for t in answers)
    log = [json.loads(line)["loss"] for line in (out / "sft" / "sft_log.jsonl").open()]
    report = {"base": str(bases[-1]), "head": a.head, "attn_loss": a.attn_loss, "attn_layer": a.attn_layer, "steps": a.steps, "n": len(samples), "majority_rate": mini.majority_rate(samples),
              "det": r["det"], "loc": r["loc"], "yes": yes, "no": len(answers) - yes,
              "loss_last25": sum(log[-25:]) / len(log[-25:])}
    if a.held_out:
        held = t5.evaluate(adapter, eval_m, "default", "no-rl-sft", out / "eval_heldout", 96)
        said = [json.loads(line)["response"] for line in (out / "eval_heldout" / "predictions.jsonl").open()]
        report["held_out"] = {"n": len(said), "majority_rate": mini.majority_rate(read_manifest(eval_m).samples),
                              "det": held["det"], "loc": held["loc"], "yes": sum("<answer>Yes" in t for t in said)}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
