"""Mini Anomaly-R1: train a small Qwen2.5-VL from scratch on the bundled synthetic benchmark, on CPU.

    python benchmarks/mini_anomaly_r1.py [--out DIR] [--fresh] [--no-trl]   # the reported run
    python benchmarks/mini_anomaly_r1.py --select ...   # settings search on a validation split

The defaults are the settings chosen on the validation split (docs/training.md, "Mini Anomaly-R1"):
foam and carpet, 180 normal + 180 anomalous images each, single-image prompt, 128x128 px, the random
vision tower frozen, SFT 1000 steps at lr 2e-3, GRPO 16 rollouts of 8 prompts x G=8 at lr 1e-4.
Runs before November 23 (third pass) used other defaults; docs/training.md lists them.

Settings are searched with ``--select``: the model trains on 80 % of the training pool and is
evaluated on the other 20 % (validation); the held-out images are only read by a run without it,
which trains on the whole pool. ``--categories``/``--per-class`` pick an easier or larger subset of
the synthetic benchmark, ``--no-reference`` the single-image prompt, ``--vision`` whether the random
vision tower trains (fully, only its merger, or not at all; see docs/training.md for what was tried
and measured).

Pipeline (the real trainer and the real evaluation path, only smaller):

1. the synthetic benchmark (``mmrbench.data.synth``), its test-split samples (those have a normal
   reference and ground-truth boxes) split by a hash of the id into a training pool (75 %, of which
   a second hash sets 20 % aside as validation for ``--select``) and held-out evaluation images (25 %);
2. a randomly initialised Qwen2.5-VL a few times the size of the test model (a small byte-level
   BPE tokenizer trained on the prompts, ``--image-side`` pixel images, 128 by default);
   (LoRA r=16 on the language model as in the paper; the random output head is trained fully, and
   with ``--vision train|merger`` the vision tower or its merger too, saved with the adapter via
   peft's ``modules_to_save``)
3. SFT on short templated think/answer targets, then GRPO with contrastive sampling;
4. after each stage the saved adapter is evaluated through the ``hf`` provider (greedy) on the
   held-out images: answer-format compliance, detection accuracy (vs. the majority-class rate) and
   mean reward;
5. when ``trl`` is installed, the time of one GRPO step of our loop and of TRL's GRPOTrainer set up
   for the same objective (``mmrbench.train.trl_compare``: bnpo token-mean, group reward scaling,
   k3 KL without TRL's ratio correction, dropout off, adapter-disabled base model as reference, left
   padding), same model, data and settings, and their ratio.

Figures depend on the machine; the script prints what it measured, nothing is hard-coded.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmrbench.testing.mini_pretrain import PretrainConfig  # noqa: E402
from mmrbench.testing.mini_qwen import build_model  # noqa: E402  (the base model, shared with tools/)

_FORMAT_RE = re.compile(r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$", re.S)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data --------------------------------------------------------------------------------------
def majority_rate(samples) -> float:
    """Accuracy of always giving the more frequent answer: the floor a detector must beat."""
    n_anom = sum(s.is_anomalous for s in samples)
    return max(n_anom, len(samples) - n_anom) / len(samples)


#: "large": the default benchmark's layout with 3x the test images per category (more distinct images
#: to learn from; a tiny model memorises 200 images long before it learns to see defects)
LARGE = {"train": 8, "test_normal": 24, "test_anomalous": 30}


def make_data(out: Path, seed: int, scale: str, categories: list[str] | None = None,
              per_class: int = 0) -> tuple[Path, Path, Path, Path, dict]:
    """Generate the synthetic benchmark and split its test images (those have a normal reference and
    ground-truth boxes) by a hash of the id: 25 % held-out evaluation, and of the rest 20 % a
    validation split (settings are chosen on it, never on the held-out images), 80 % training."""
    from mmrbench.data import synth
    from mmrbench.data.manifest import read_manifest, write_manifest

    name = scale if not (categories or per_class) else (
        f"{scale if not per_class else f'pc{per_class}'}-{zlib.crc32(','.join(categories or []).encode()):08x}")
    data = out / f"data-{name}"
    if not (data / "manifest.jsonl").exists():
        if per_class:
            scale = f"pc{per_class}"
            synth.SCALES[scale] = synth.Scale(train=8, test_normal=per_class, test_anomalous=per_class)
        elif scale == "large" and "large" not in synth.SCALES:
            synth.SCALES["large"] = synth.Scale(**LARGE)
        synth.generate(data, seed=seed, scale=scale, categories=categories or None, force=True)
    m = read_manifest(data / "manifest.jsonl")
    pool = [s for s in m.samples if s.split == "test" and s.reference]
    train, val, ev = [], [], []
    for s in pool:
        if zlib.crc32(s.id.encode()) % 4 == 0:
            ev.append(s)
        else:
            (val if zlib.crc32(f"val:{s.id}".encode()) % 5 == 0 else train).append(s)
    for s in train + val:
        s.split = "train"
    write_manifest(data / "mini_fit.jsonl", train)     # training images while settings are searched (--select)
    write_manifest(data / "mini_val.jsonl", val)
    # the whole training pool (in generation order, as before --select existed), for the reported run
    write_manifest(data / "mini_train.jsonl", [s for s in pool if s.split == "train"])
    write_manifest(data / "mini_eval.jsonl", ev)

    stats = {"train": len(train) + len(val), "fit": len(train), "val": len(val), "eval": len(ev),
             "majority_rate": majority_rate(ev), "val_majority_rate": majority_rate(val)}
    return data / "mini_train.jsonl", data / "mini_fit.jsonl", data / "mini_val.jsonl", data / "mini_eval.jsonl", stats


# -- model -------------------------------------------------------------------------------------
# -- evaluation through the hf provider --------------------------------------------------------
def evaluate(run_dir: Path, eval_manifest: Path, max_new_tokens: int, batch_size: int,
             variant: str = "default") -> dict:
    from mmrbench.adapters.base import GenerationConfig
    from mmrbench.adapters.registry import instantiate as create_model
    from mmrbench.data.manifest import read_manifest
    from mmrbench.parsing import parse_answer
    from mmrbench.requests_build import build_request
    from mmrbench.train.rewards import anomaly_reward

    m = read_manifest(eval_manifest)
    model = create_model("hf", str(run_dir), batch_size=batch_size, device="cpu")
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    texts, sent = [], []
    samples = m.samples
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        resps = model.generate([build_request(s, m.root, variant=variant, config=cfg) for s in chunk])
        for r in resps:
            texts.append(r.text or "")
            sent.append(tuple(r.image_sizes[-1]) if r.image_sizes else None)
    model.close()
    kw = {"label": [s.label for s in samples], "gt_boxes": [[list(b.xyxy) for b in s.boxes] for s in samples],
          "image_size": [(s.width, s.height) for s in samples], "sent_size": sent,
          "convention": ["pixel"] * len(samples)}
    rewards = anomaly_reward(None, texts, **kw)
    correct = [parse_answer(t).decision == s.is_anomalous for t, s in zip(texts, samples)]
    said_yes = sum(parse_answer(t).decision is True for t in texts)
    return {"n": len(samples), "compliance": sum(bool(_FORMAT_RE.match(t)) and parse_answer(t).valid for t in texts) / len(texts),
            "accuracy": sum(correct) / len(samples), "mean_reward": sum(rewards) / len(rewards),
            "said_yes": said_yes / len(samples), "example": texts[0][:200]}


# -- training ----------------------------------------------------------------------------------
#: what ``--vision`` trains besides the LoRA adapter and the output head
VISION_MODULES = {"frozen": [], "merger": ["merger"], "train": ["visual"]}


def trained_modules(vision: str, train_embed: bool, head: bool = True) -> list[str]:
    """Modules trained fully beside LoRA. The random base's output head is (LoRA alone cannot steer a
    random head); ``head=False`` is the paper's setting for a pretrained base, LoRA alone."""
    return (["lm_head"] if head else []) + VISION_MODULES[vision] + (["embed_tokens"] if train_embed else [])


def common_overrides(model_dir: Path, manifest: Path, variant: str, modules: list[str]) -> dict:
    # min/max_pixels 0: the model folder's own processor bounds (--image-side squared), the frame the hf
    # provider also uses
    return {"model.base": str(model_dir), "model.device": "cpu", "data.manifest": str(manifest),
            "model.min_pixels": 0, "model.max_pixels": 0,
            "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0, "lora.target": "language",
            # from scratch, a random output head cannot be steered by low-rank updates alone: it is
            # trained fully (and saved with the adapter), with whatever --vision adds
            "lora.modules_to_save": modules,
            "data.prompt_variant": variant}


def run_sft_stage(model_dir, manifest, out, steps, lr, batch, variant, modules, token_loss=0.0, token_layer=0,
                  position_loss=0.0):
    from mmrbench.train.recipe import load_recipe
    from mmrbench.train.sft import run_sft

    r = load_recipe(ROOT / "baselines/anomaly-r1/sft.toml", "sft", {
        **common_overrides(model_dir, manifest, variant, modules), "model.gradient_checkpointing": False,
        "sft.max_steps": steps, "sft.lr": lr, "sft.batch_size": batch, "sft.warmup_ratio": 0.05,
        "sft.weight_decay": 0.0, "sft.save_steps": 0, "sft.lr_scheduler": "cosine",
        "sft.token_loss_weight": token_loss, "sft.token_loss_layer": token_layer,
        "sft.position_loss_weight": position_loss})
    return run_sft(r, out, progress=True)


def grpo_recipe(model_dir, manifest, init, steps, lr, prompt_batch, group, mini, max_new, variant, modules,
                temperature=1.0):
    from mmrbench.train.recipe import load_recipe

    return load_recipe(ROOT / "baselines/anomaly-r1/grpo.toml", "grpo", {
        **common_overrides(model_dir, manifest, variant, modules), "model.gradient_checkpointing": False,
        "grpo.temperature": temperature, "grpo.init_adapter": str(init), "grpo.max_steps": steps, "grpo.lr": lr, "grpo.prompt_batch": prompt_batch,
        "grpo.group_size": group, "grpo.mini_batch": mini, "grpo.max_new_tokens": max_new,
        "grpo.warmup_ratio": 0.0, "grpo.save_steps": 0, "grpo.lr_scheduler": "constant"})


# -- TRL comparison ----------------------------------------------------------------------------
def trl_step_time(rec, init: Path, rollouts: int) -> tuple[float | None, str]:
    """Seconds per GRPO rollout step of TRL's GRPOTrainer on the same model, data and objective as
    our loop (``rec``: our GRPO recipe), or why not.

    Same objective, not TRL's defaults: :mod:`mmrbench.train.trl_compare` sets ``loss_type="bnpo"``
    (token-mean per update, as ours), ``scale_rewards="group"``, ``use_bias_correction_kl`` from
    ``grpo.kl_estimator`` (False for k3), dropout off, the base model (adapter disabled) as the KL
    reference, left-padded prompts, and one generation feeding the same number of updates as ours
    (so a rollout = that many TRL steps).
    """
    try:
        import trl
    except ImportError:
        return None, "trl not installed (pip install -c .ci/constraints.txt 'mmrbench[trl]')"
    try:
        from mmrbench.data.manifest import read_manifest
        from mmrbench.train.trl_compare import build_trl_trainer

        g = rec.train
        updates = g.prompt_batch // g.mini_batch
        samples = read_manifest(rec.data.manifest).samples[: g.prompt_batch * (rollouts + 1)]
        trainer = build_trl_trainer(rec, init.parent / "trl_tmp", samples=samples, max_steps=rollouts * updates)
        t0 = time.perf_counter()
        trainer.train()
        return (time.perf_counter() - t0) / rollouts, f"trl {trl.__version__}, same objective (bnpo, group scaling, base-model reference)"
    except Exception as exc:  # report why TRL could not run this model, do not hide it
        return None, f"TRL GRPOTrainer failed on the tiny Qwen2.5-VL: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/mini_anomaly_r1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=None,
                    help="seed of the synthetic data and its splits (default: --seed); fix it to vary only the model")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny models on a shared CPU)")
    ap.add_argument("--synth-scale", default="large", choices=("default", "large"))
    ap.add_argument("--categories", default="foam,carpet", help="comma-separated synthetic categories ('' = all)")
    ap.add_argument("--per-class", type=int, default=180,
                    help="normal and anomalous test images generated per category (0 = the scale's)")
    ap.add_argument("--no-reference", dest="no_reference", action="store_true", default=True,
                    help="query image only (prompt variant no_reference; the default)")
    ap.add_argument("--with-reference", dest="no_reference", action="store_false",
                    help="reference + query images (the paper's default prompt)")
    ap.add_argument("--reuse-sft", action="store_true", help="keep an SFT adapter already under --out/sft")
    ap.add_argument("--grpo-temperature", type=float, default=1.0)
    ap.add_argument("--train-embed", action="store_true", help="train the token embeddings fully too")
    ap.add_argument("--lora-only", action="store_true",
                    help="do not train the output head fully: LoRA alone, as the paper on its pretrained base "
                         "(meant with --pretrain-steps)")
    ap.add_argument("--vision", choices=sorted(VISION_MODULES), default="frozen",
                    help="the random vision tower: train it fully, train only its merger, or keep it frozen")
    ap.add_argument("--select", action="store_true",
                    help="settings search: evaluate on the validation split (carved from the training pool), "
                         "skip GRPO's TRL timing; the held-out split is not touched")
    ap.add_argument("--image-side", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="steps of grounding pretraining of the base model on procedural marks "
                         "(mmrbench.testing.mini_pretrain.PretrainConfig's defaults otherwise)")
    ap.add_argument("--pretrain-layer", type=int, default=0,
                    help="PretrainConfig.token_layer: the decoder layer the pretraining's per-token losses read "
                         "(0 = the last)")
    ap.add_argument("--pretrain-coord", type=float, default=0.0,
                    help="PretrainConfig.coord_aux: weight of the pretraining's coordinate loss (0 = off)")
    ap.add_argument("--sft-steps", type=int, default=1000)
    ap.add_argument("--sft-lr", type=float, default=2e-3)
    ap.add_argument("--sft-batch", type=int, default=8)
    ap.add_argument("--token-loss", type=float, default=0.0,
                    help="weight of the auxiliary per-token defect loss in SFT (sft.token_loss_weight; 0 = off)")
    ap.add_argument("--token-layer", type=int, default=0, help="sft.token_loss_layer (0 = the last layer)")
    ap.add_argument("--position-loss", type=float, default=0.0,
                    help="weight of the auxiliary position loss in SFT (sft.position_loss_weight; 0 = off)")
    ap.add_argument("--grpo-steps", type=int, default=16)
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    ap.add_argument("--prompt-batch", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--mini-batch", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N held-out images (0 = all)")
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="delete previous runs under --out first")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = Path(args.out)
    if args.fresh:
        for d in ("grpo",) if args.reuse_sft else ("sft", "grpo"):
            shutil.rmtree(out / d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    cats = [c for c in args.categories.split(",") if c]
    variant = "no_reference" if args.no_reference else "default"
    modules = trained_modules(args.vision, args.train_embed, head=not args.lora_only)
    train_m, fit_m, val_m, eval_m, stats = make_data(out, args.seed if args.data_seed is None else args.data_seed, args.synth_scale, cats,
                                                       args.per_class)
    if args.select:  # train on the fit part, evaluate on validation; the held-out images are not read
        train_m, eval_m = fit_m, val_m
        stats.update(train=stats["fit"], eval=stats["val"], majority_rate=stats["val_majority_rate"])
    if args.eval_limit:
        from mmrbench.data.manifest import read_manifest, write_manifest
        ev = read_manifest(eval_m).samples[: args.eval_limit]
        eval_m = eval_m.with_name(f"{eval_m.stem}_first{args.eval_limit}.jsonl")
        write_manifest(eval_m, ev)
        stats.update(eval=len(ev), majority_rate=majority_rate(ev))
    log(f"data: {stats}")
    model_dir = build_model(out, args.seed, args.image_side, args.hidden, args.layers, train_m, variant,
                            PretrainConfig(args.pretrain_steps, token_layer=args.pretrain_layer, coord_aux=args.pretrain_coord)
                            if args.pretrain_steps else None)
    n_params = sum(p.numel() for p in __import__("transformers").AutoModelForImageTextToText.from_pretrained(str(model_dir)).parameters())
    log(f"model: {model_dir.name}, {n_params / 1e6:.2f}M parameters")

    t0 = time.perf_counter()
    if not (args.reuse_sft and (out / "sft" / "adapter_config.json").exists()):
        run_sft_stage(model_dir, train_m, out / "sft", args.sft_steps, args.sft_lr, args.sft_batch, variant, modules,
                      args.token_loss, args.token_layer, args.position_loss)
    t_sft = time.perf_counter() - t0
    sft_eval = evaluate(out / "sft", eval_m, args.max_new_tokens, 16, variant)
    log(f"after SFT ({t_sft:.0f} s): {sft_eval}")

    from mmrbench.train.grpo import GRPOTrainer

    rec = grpo_recipe(model_dir, train_m, out / "sft", args.grpo_steps, args.grpo_lr, args.prompt_batch,
                      args.group, args.mini_batch, args.max_new_tokens, variant, modules, args.grpo_temperature)
    grpo_log = out / "grpo" / "grpo_log.jsonl"
    logged_before = len(grpo_log.read_text().splitlines()) if grpo_log.exists() else 0
    t0 = time.perf_counter()
    trainer = GRPOTrainer(rec, out / "grpo", progress=True)
    trainer.train()
    t_grpo = time.perf_counter() - t0
    steps_log = [json.loads(x) for x in grpo_log.read_text().splitlines()]
    # a resumed run times only the steps it ran; a run resumed after its last step has only the
    # earlier process's times, and says so next to the figure
    timed = steps_log[logged_before:] or steps_log
    ours_step = sum(r["time_s"] for r in timed) / len(timed)
    ours_note = "" if len(timed) < len(steps_log) or not logged_before else " (read from the earlier run's log)"
    grpo_eval = evaluate(out / "grpo", eval_m, args.max_new_tokens, 16, variant)
    log(f"after GRPO ({t_grpo:.0f} s): {grpo_eval}")

    trl_s, trl_note = (None, "skipped (--no-trl)") if (args.no_trl or args.select) else trl_step_time(
        rec, out / "sft", 2)
    total = time.perf_counter() - t_start
    print()
    print(f"Mini Anomaly-R1 on CPU ({args.threads} thread(s)), {n_params / 1e6:.2f}M-parameter Qwen2.5-VL from scratch, "
          f"{stats['train']} training / {stats['eval']} {'VALIDATION' if args.select else 'held-out'} images ({args.image_side}x{args.image_side} px)")
    print(f"{'stage':<6} {'compliance':>10} {'det. acc':>9} {'majority':>9} {'mean reward':>12} {'said Yes':>9}")
    for name, e in (("SFT", sft_eval), ("GRPO", grpo_eval)):
        print(f"{name:<6} {e['compliance']:>10.1%} {e['accuracy']:>9.1%} {stats['majority_rate']:>9.1%} "
              f"{e['mean_reward']:>12.3f} {e['said_yes']:>9.1%}")
    print(f"GRPO training reward (policy samples): first step {steps_log[0]['reward_policy']:.3f}, "
          f"last step {steps_log[-1]['reward_policy']:.3f}")
    print(f"GRPO step ({args.prompt_batch} prompts x G={args.group}, {args.prompt_batch // args.mini_batch} updates): "
          f"ours {ours_step:.2f} s{ours_note}", end="")
    if trl_s:
        print(f", TRL GRPOTrainer {trl_s:.2f} s, ratio ours/TRL = {ours_step / trl_s:.2f} ({trl_note})")
    else:
        print(f"; TRL: {trl_note}")
    print(f"wall time {total / 60:.1f} min (SFT {t_sft:.0f} s, GRPO {t_grpo:.0f} s)")
    (out / "summary.json").write_text(json.dumps({"data": stats, "params": n_params, "sft": sft_eval, "grpo": grpo_eval,
                                                  "grpo_step_s": ours_step, "trl_step_s": trl_s, "trl": trl_note,
                                                  "wall_s": total, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
