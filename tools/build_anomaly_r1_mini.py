"""Build Anomaly-R1-mini, the bundled board's reference entry, from nothing, on CPU.

    python tools/build_anomaly_r1_mini.py --work runs/anomaly-r1-mini-build [--seed 0]
    python tools/build_anomaly_r1_mini.py --work W --install      # replace the shipped checkpoint

It follows the general-AD protocol of the bundled benchmark: the model never sees the held-out
subdatasets (SynMVTecAD, SynVisA, SynMVTec3D, SynMPDD). Steps, each an ordinary command a user can run:

1. training data: the synthetic benchmark's training-only subdataset (SynExtra: fabric, tile, bottle),
   generated with more test-split images per category than the bundled benchmark has (those carry a
   normal reference and ground-truth boxes); all of them are training images here;
2. the base model: a ~1M-parameter Qwen2.5-VL initialised from ``--seed`` with a tokenizer trained on the
   training prompts (:mod:`mmrbench.testing.mini_qwen`), 128 x 128 px images;
3. ``mmrbench train sft`` then ``mmrbench train grpo`` with ``baselines/anomaly-r1-mini/{sft,grpo}.toml``
   (the paper's prompt with the normal reference; LoRA r=16 plus a trained output head);
4. ``mmrbench train export``: adapter merged into the base, one folder of plain weights;
5. with ``--bundled DIR`` (a ``mmrbench bundled`` working folder): ``mmrbench eval`` of the result on
   that benchmark's held-out subdatasets, printed beside the shipped entry's figures.

``--install`` copies the model, the training logs, ``build.json`` (seed, data, commands, versions, wall
times) and, with ``--bundled``, the evaluation's ``result.json`` (as ``eval.json``) into
``baselines/anomaly-r1-mini/``.
About 35 minutes on one core; the figures and the spread between seeds are in
``baselines/anomaly-r1-mini/README.md``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIPPED = ROOT / "baselines" / "anomaly-r1-mini"
#: the training-only subdataset of the bundled benchmark (mmrbench.data.synth_categories.SUBDATASETS)
TRAIN_SUBDATASET = "SynExtra"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(*argv: str) -> None:
    """One ``mmrbench`` command, in this process, echoed as a user would type it."""
    from mmrbench.cli import main

    log("$ mmrbench " + " ".join(argv))
    rc = main(list(argv))
    if rc:
        raise SystemExit(f"mmrbench {argv[0]} failed with exit code {rc}")


#: generic names for the category-name augmentation: none is a category of the bundled benchmark or of
#: MVTec AD, VisA, MVTec 3D-AD or MPDD
NAME_POOL = ("part", "component", "surface", "item", "product", "panel", "sheet", "gear", "valve", "button",
             "washer", "spring", "bolt", "hinge", "nozzle", "lid", "knob", "clip", "pad", "tray", "disc", "block",
             "sleeve", "film", "label", "housing", "lens", "fitting", "casting", "gasket")


def augmented_name(sample_id: str, seed: int, p: float) -> str | None:
    """A replacement category name for one training image, or None to keep its own (probability 1 - p).

    Why: the prompt names the category twice and the templated reasoning once. Trained on three
    categories, a 1M-parameter model ties its whole answer to those three words, and on a held-out
    category (a name it never read) it writes broken text: in the first builds, without this, 66 %
    (seed 0) and 13 % (seed 1) of its 234 held-out answers were unreadable. Seeing many names, half of
    them random letter strings, it learns that the name does not decide the answer (hoped, and measured
    in baselines/anomaly-r1-mini/README.md). Deterministic per (seed, id)."""
    import random

    rng = random.Random(f"{seed}:{sample_id}")
    if rng.random() >= p:
        return None
    if rng.random() < 0.5:
        return rng.choice(NAME_POOL)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9)))


def training_data(work: Path, seed: int, per_class: int, name_augment: float = 0.0) -> tuple[Path, dict]:
    """The training-only subdataset's test-split images (reference + boxes), marked as training; with
    ``name_augment`` > 0, that share of them named as another category (:func:`augmented_name`)."""
    from mmrbench.data import synth
    from mmrbench.data.manifest import file_sha256, read_manifest, write_manifest
    from mmrbench.data.synth_categories import CATEGORIES, HELD_OUT

    cats = [c.name for c in CATEGORIES if c.subdataset == TRAIN_SUBDATASET]
    assert not {c.subdataset for c in CATEGORIES if c.name in cats} & set(HELD_OUT)
    data = work / "data"
    scale = f"train{per_class}"
    synth.SCALES[scale] = synth.Scale(train=8, test_normal=per_class, test_anomalous=per_class)
    if not (data / "manifest.jsonl").exists():
        synth.generate(data, seed=seed, scale=scale, categories=cats, force=True)
    samples = [s for s in read_manifest(data / "manifest.jsonl").samples if s.split == "test" and s.reference]
    renamed = 0
    for s in samples:
        s.split = "train"
        name = augmented_name(s.id, seed, name_augment)
        if name is not None:
            s.category = name
            renamed += 1
    path = data / (f"train-names{name_augment:g}.jsonl" if name_augment else "train.jsonl")
    write_manifest(path, samples)
    n_anom = sum(s.is_anomalous for s in samples)
    return path, {"subdataset": TRAIN_SUBDATASET, "categories": cats, "synth_seed": seed, "per_class": per_class,
                  "images": len(samples), "anomalous": n_anom, "name_augment": name_augment, "renamed": renamed,
                  "manifest_sha256": file_sha256(path)}


def pretrain_summary(base: Path) -> dict | None:
    """The base's pretraining record without its per-step losses (kept in the base's ``pretrain.json``)."""
    path = base / "pretrain.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    losses = report.get("loss") or []
    ev = {k: v for k, v in (report.get("grounding_eval") or {}).items() if k != "samples"}
    return {"steps": report.get("steps"), "stages": report.get("stages"), "final_loss_mean_last_50": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
            "grounding_eval": ev}


def versions() -> dict:
    """What a bit-identical rebuild needs to match (build.json)."""
    from mmrbench import __version__
    from mmrbench.provenance import package_versions

    return {"python": platform.python_version(), "mmrbench": __version__,
            **package_versions(("torch", "transformers", "peft", "tokenizers"))}


def evaluate_on_bundled(model_dir: Path, bundled: Path, out: Path) -> dict:
    """``mmrbench eval`` of the built model with the shipped card's settings (a copy of the card that
    points at ``model_dir``) on the held-out subdatasets of a ``mmrbench bundled`` folder."""
    from mmrbench.commands.bundled import held_out_subdatasets

    card = (ROOT / "adapters" / "anomaly-r1-mini.toml").read_text(encoding="utf-8")
    lines = [f"model_id = {json.dumps(str(model_dir.resolve()))}" if ln.startswith("model_id") else ln
             for ln in card.splitlines()]
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "anomaly-r1-mini.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = bundled / "data"
    subs = held_out_subdatasets(data) or []
    cli("eval", "--model", str(out.parent / "anomaly-r1-mini.toml"), "--data", str(data / "manifest.jsonl"),
        "--split", "test", *(["--subdatasets", ",".join(subs)] if subs else []), "--out", str(out), "--no-progress")
    return json.loads((out / "result.json").read_text())


def summary(result: dict) -> dict:
    """Per held-out subdataset: detection and localization accuracy (%), images, unreadable answers."""
    return {sub: {"det_acc": round(100 * m["det"]["accuracy"], 1), "loc_acc": round(100 * m["loc"]["accuracy"], 1),
                  "n": m["n"], "invalid": m["invalid"]}
            for sub, m in sorted(result["metrics"]["subdatasets"].items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="working folder (data, base model, sft, grpo, model)")
    ap.add_argument("--seed", type=int, default=0, help="model initialisation and training seed")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic training images")
    ap.add_argument("--per-class", type=int, default=180, help="normal and anomalous training images per category")
    ap.add_argument("--layers", type=int, default=4, help="language model layers")
    ap.add_argument("--name-augment", type=float, default=0.75,
                    help="share of training images named as another category (0 = their own names)")
    ap.add_argument("--pretrain-steps", type=int, default=0,
                    help="grounding pretraining of the base on generated marks (0 = a random base; "
                         "mmrbench.testing.mini_pretrain)")
    ap.add_argument("--pretrain-layer", type=int, default=0, help="PretrainConfig.token_layer (0 = the last)")
    ap.add_argument("--pretrain-attn", type=float, default=0.0,
                    help="PretrainConfig.attn_aux: head 0 of --pretrain-attn-layer looks at the mark while its box "
                         "is written (0 = off)")
    ap.add_argument("--pretrain-attn-layer", type=int, default=0, help="PretrainConfig.attn_layer (1-based; 0 = the last)")
    ap.add_argument("--pretrain-more", type=int, default=0,
                    help="a second pretraining stage of this many steps at the final mark sizes (curriculum 0), "
                         "the same losses, a fresh optimizer (0 = none)")
    ap.add_argument("--rope-theta", type=float, default=10000.0,
                    help="the language model's rotary base (20 lets the width's frequencies tell columns apart; "
                         "docs/training.md, December 2)")
    ap.add_argument("--sft-steps", type=int, default=0, help="sft.max_steps (0 = the shipped sft.toml's)")
    ap.add_argument("--sft-attn-loss", type=float, default=0.0,
                    help="sft.attention_loss_weight: the same head looks at the query's defect in SFT (0 = off)")
    ap.add_argument("--sft-attn-layer", type=int, default=0, help="sft.attention_loss_layer (1-based; 0 = the last)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a 1M model)")
    ap.add_argument("--bundled", default=None, help="a `mmrbench bundled` folder: evaluate the result on it")
    ap.add_argument("--install", action="store_true", help="copy the result into baselines/anomaly-r1-mini/")
    ap.add_argument("--install-dir", default=str(SHIPPED), help=argparse.SUPPRESS)  # tests install elsewhere
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run (2 SFT steps, 1 small GRPO step, 4 images per class): checks the pipeline, "
                         "builds nothing worth installing")
    a = ap.parse_args(argv)
    orphans = [f"--{k.replace('_', '-')}" for k in ("pretrain_layer", "pretrain_attn", "pretrain_attn_layer", "pretrain_more")
               if getattr(a, k)]
    if orphans and not a.pretrain_steps:
        ap.error(f"{', '.join(orphans)}: pretraining options, which only take effect with --pretrain-steps")

    import torch

    from mmrbench.testing.mini_pretrain import PretrainConfig
    from mmrbench.testing.mini_qwen import build_model

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    # a rerun on a finished folder (to --install, or evaluate) keeps the stages' recorded times
    prev = json.loads((work / "build.json").read_text()) if (work / "build.json").exists() else {}
    t0 = time.perf_counter()
    train_manifest, data_info = training_data(work, a.data_seed, 4 if a.quick else a.per_class, a.name_augment)
    log(f"training data: {data_info}")
    pretrain: list[PretrainConfig] = []
    if a.pretrain_steps:
        settings = {"token_layer": a.pretrain_layer, "attn_aux": a.pretrain_attn, "attn_layer": a.pretrain_attn_layer}
        pretrain.append(PretrainConfig(2 if a.quick else a.pretrain_steps, **settings))
        if a.pretrain_more:  # the measured base's second stage: the final mark sizes from its first step
            pretrain.append(PretrainConfig(2 if a.quick else a.pretrain_more, curriculum=0.0, **settings))
    started = time.time()
    base = build_model(work, a.seed, 128, 128, a.layers, train_manifest, "default", pretrain, a.rope_theta)
    times["data_and_base_s"] = time.perf_counter() - t0
    if (base / "config.json").stat().st_mtime < started and "data_and_base_s" in prev.get("times", {}):
        times["data_and_base_s"] = prev["times"]["data_and_base_s"]  # this base was built before: keep its time

    def train(stage: str, *argv: str) -> None:
        """One ``mmrbench train`` command. A stage already finished in ``--work`` resumes at its last step,
        so a rerun (to evaluate or install) costs seconds and keeps the stage's recorded time; the trainer
        refuses to resume one trained with other settings (mmrbench.train.common.check_resume)."""
        finished = (work / stage / "adapter_config.json").exists()
        t = time.perf_counter()
        cli("train", stage, *argv)
        recorded = prev.get("times", {}).get(f"{stage}_s")
        times[f"{stage}_s"] = recorded if finished and recorded is not None else time.perf_counter() - t

    sft_steps = 2 if a.quick else a.sft_steps
    sft_sets = [*(["--set", f"sft.max_steps={sft_steps}"] if sft_steps else []),
                *([x for kv in (f"sft.attention_loss_weight={a.sft_attn_loss:g}",
                                f"sft.attention_loss_layer={a.sft_attn_layer}") for x in ("--set", kv)]
                  if a.sft_attn_loss else [])]
    quick_grpo = [x for kv in ("grpo.max_steps=1", "grpo.prompt_batch=2", "grpo.group_size=4", "grpo.mini_batch=2",
                               "grpo.max_new_tokens=16") for x in ("--set", kv)] if a.quick else []
    train("sft", "--recipe", str(SHIPPED / "sft.toml"), "--model", str(base), "--data", str(train_manifest),
          "--out", str(work / "sft"), "--set", f"sft.seed={a.seed}", *sft_sets)
    train("grpo", "--recipe", str(SHIPPED / "grpo.toml"), "--model", str(base), "--data", str(train_manifest),
          "--init-adapter", str(work / "sft"), "--out", str(work / "grpo"), "--set", f"grpo.seed={a.seed}", *quick_grpo)
    model = work / "model"
    if model.exists():
        shutil.rmtree(model)
    cli("train", "export", "--adapter", str(work / "grpo"), "--out", str(model))
    # the sum of the stages as recorded (rounded), so a rerun that keeps them records the same total
    times["total_s"] = sum(round(times[k], 1) for k in ("data_and_base_s", "sft_s", "grpo_s"))
    options = {k: getattr(a, k) for k in ("pretrain_steps", "pretrain_layer", "pretrain_attn", "pretrain_attn_layer",
                                          "pretrain_more", "sft_steps", "sft_attn_loss", "sft_attn_layer")}
    if a.rope_theta != 10000.0:
        options["rope_theta"] = a.rope_theta
    build = {"seed": a.seed, "layers": a.layers, "options": options,
             "pretrain": pretrain_summary(base), "data": data_info, "times": {k: round(v, 1) for k, v in times.items()},
             "threads": a.threads, "versions": versions(),
             "quick": a.quick,
             "commands": [f"python tools/build_anomaly_r1_mini.py --work WORK --seed {a.seed} --data-seed {a.data_seed} "
                          f"--per-class {a.per_class} --layers {a.layers} --name-augment {a.name_augment:g}"
                          + "".join(f" --{k.replace('_', '-')} {v:g}" for k, v in options.items() if v)
                          + (" --quick" if a.quick else "")]}
    (work / "build.json").write_text(json.dumps(build, indent=1) + "\n")
    log(f"built {model} in {times['total_s'] / 60:.1f} min")

    if a.bundled:
        res = evaluate_on_bundled(model, Path(a.bundled), work / "eval-bundled")
        shipped = SHIPPED / "eval.json"
        print(json.dumps({"built": summary(res),
                          "shipped": summary(json.loads(shipped.read_text())) if shipped.exists() else None}, indent=1))
    if a.install:
        shipped_dir = Path(a.install_dir)
        dest = shipped_dir / "model"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(model, dest)
        export = json.loads((model / "export.json").read_text())
        # the build machine's folders mean nothing elsewhere: build.json says how the folders were made
        export.update(adapter="WORK/grpo", base=f"WORK/{base.name}")
        (dest / "export.json").write_text(json.dumps(export, indent=1) + "\n")
        for name in ("sft/sft_log.jsonl", "grpo/grpo_log.jsonl"):
            shutil.copy2(work / name, shipped_dir / Path(name).name)
        shutil.copy2(work / "build.json", shipped_dir / "build.json")
        if a.bundled:
            res["model"]["model_id"] = "WORK/model"
            (shipped_dir / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
        log(f"installed into {shipped_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
