"""Table 5 in miniature: the shipped Anomaly-R1 ablation recipes on the mini benchmark, on CPU.

    python benchmarks/table5_mini.py [--out DIR] [--seeds 0,1,2] [--budget-min 60]
    python benchmarks/table5_mini.py --quick                         # smoke run (a minute or two)

Every row trains with the *shipped* recipe files (``baselines/anomaly-r1/grpo.toml``, ``sft.toml`` and
``ablations/*.toml``), loaded as they are and overridden only where the mini model needs it (base
model, CPU, LoRA size and modules to save, steps, learning rates, batch sizes); the ablation keys
themselves (``prompt_variant``, ``answer_only``, ``init_adapter``, ``contrastive``) come from the files.
The model, data and held-out split are ``benchmarks/mini_anomaly_r1.py``'s (same functions).

Stages per seed, shared where the recipes share them: four SFT runs (``sft``, ``answer-only-sft``,
``no-reference-sft``, ``domain-knowledge-sft``) and six GRPO runs (full, answer-only, no-reference,
no-cold-start, no-contrastive, domain-knowledge); "w/o RL" is the ``sft`` adapter itself
(``no-rl-sft`` extends ``sft.toml`` without changing anything, so it is not trained twice).
A stage whose folder under ``--out`` already holds an adapter trained with the same settings (its saved
``*_recipe.json``) is reused, so a stopped run resumes; one trained with other settings stops the script with the
settings that differ (use ``--fresh`` or delete that stage's folder). Held-out evaluations are always re-run.

Each row is evaluated through the harness (``mmrbench.runner.run_eval`` with the ``hf`` provider) on
the held-out split with the recipe's prompt variant; the protocol's own scorer writes
``result.json``, to which ``model.recipe`` (the ablation recipe's name) is added so the run can be
submitted next to Table 5 (docs/leaderboard.md). The table prints detection and localization
accuracy, mean over seeds with a 95 % t-interval over seeds (the spread of training runs, not of
images). The held-out split is only evaluated, never used to choose settings.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = ROOT / "baselines" / "anomaly-r1"


def _mini():
    spec = importlib.util.spec_from_file_location("mini_anomaly_r1", ROOT / "benchmarks" / "mini_anomaly_r1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass(frozen=True)
class Row:
    label: str          # Table 5's row name
    recipe: str         # recipe file under baselines/anomaly-r1 (the name written to model.recipe)
    sft: str | None     # the SFT recipe whose adapter it starts from / is (None: no cold start)


#: Table 5's rows, in the paper's order
ROWS = (
    Row("Anomaly-R1 (full)", "grpo", "sft"),
    Row("w/o reasoning text", "ablations/answer-only-grpo", "ablations/answer-only-sft"),
    Row("w/o reference image", "ablations/no-reference-grpo", "ablations/no-reference-sft"),
    Row("w/o cold start", "ablations/no-cold-start-grpo", None),
    Row("w/o RL", "ablations/no-rl-sft", "sft"),
    Row("w/o contrastive sampling", "ablations/no-contrastive-grpo", "sft"),
    Row("w/ domain knowledge", "ablations/domain-knowledge-grpo", "ablations/domain-knowledge-sft"),
)

#: settings of the default run and of --quick. Measured (docs/training.md): one seed of the default run
#: takes ~29-41 min on the 2-core development machine, so --budget-min 60 fits one or two seeds, not three.
#: At these 250 SFT steps no row sees the defects; with --sft-steps 1000 two of four seeds do (held-out
#: 62.7 and 66.7 %), at about 20 min per seed for the rows grpo and no-rl-sft alone. On a pretrained base
#: (--pretrain-steps 1500 --layers 4) two of three seeds reach 87.0 and 78.5 % (docs/training.md, December 1);
#: there, with the reference image, SFT takes ~3 s per step per process (1,000 steps: ~55 min). --lora-only
#: (no head training) does not learn the answer text on these bases (docs/training.md, "LoRA alone").
#: With attention supervision in pretraining and in SFT (--pretrain-layer 2 --pretrain-attn 1 --pretrain-attn-layer 3
#: --sft-attn-loss 1 --sft-attn-layer 3, --sft-steps 400 --grpo-steps 16) all three seeds reach 93.8-96.6 % held-out
#: detection but under 3 % localization, and GRPO adds nothing at --grpo-lr 1e-4 or 1e-5 or --grpo-beta 0
#: (docs/training.md, December 1, eighth session)
#: The base's rotary base decides whether boxes can follow a defect's column: at the default rope_theta 10,000 the width
#: gets rotary frequencies too slow to tell columns apart; a base pretrained at --rope-theta 20 and continued at the
#: final mark size (mini_pretrain_check.py --init) finds 35 % of marks and, given with --base, lifts one SFT seed's
#: held-out localization from about 1 to 7.8 % (docs/training.md, December 2)
FULL = dict(per_class=180, image_side=128, sft_steps=250, sft_lr=2e-3, grpo_steps=4, prompt_batch=8, group=8,
            mini_batch=4, grpo_lr=1e-4, max_new_tokens=96, eval_limit=0, seeds="0,1,2", layers=2, pretrain_steps=0,
            pretrain_layer=0, pretrain_coord=0.0, pretrain_attn=0.0, pretrain_attn_layer=0, sft_attn_loss=0.0,
            sft_attn_layer=0, grpo_beta=-1.0, rope_theta=10000.0, grpo_box_reward="paper")
QUICK = dict(per_class=8, image_side=32, sft_steps=3, sft_lr=2e-3, grpo_steps=1, prompt_batch=2, group=4,
             mini_batch=2, grpo_lr=1e-4, max_new_tokens=64, eval_limit=6, seeds="0", layers=2, pretrain_steps=0,
             pretrain_layer=0, pretrain_coord=0.0, pretrain_attn=0.0, pretrain_attn_layer=0, sft_attn_loss=0.0,
             sft_attn_layer=0, grpo_beta=-1.0, rope_theta=10000.0, grpo_box_reward="paper")

#: what each of FULL's options sets, for --help
HELP = {"pretrain_layer": "PretrainConfig.token_layer", "pretrain_coord": "PretrainConfig.coord_aux",
        "pretrain_attn": "PretrainConfig.attn_aux (attention supervision in pretraining; 0 = off)",
        "pretrain_attn_layer": "PretrainConfig.attn_layer (1-based; 0 = the last)",
        "sft_attn_loss": "sft.attention_loss_weight of every SFT stage (0 = off)",
        "sft_attn_layer": "sft.attention_loss_layer (1-based; 0 = the last)",
        "grpo_beta": "grpo.beta of every GRPO stage (the KL weight; -1 = each recipe's own)",
        "grpo_box_reward": "grpo.box_reward of every GRPO stage: paper, or giou (graded, not the paper's; its stages, "
                           "evaluations and table go to <recipe>-giou folders and table5-giou.json beside the paper's, "
                           "so both share the SFT adapters)",
        "rope_theta": "the base's rotary base (rope_parameters.rope_theta; a smaller one lets heads tell image columns "
                      "apart, mmrbench.testing.mini_qwen.build_model)"}


def pretrain_config(a):
    """The base's grounding pretraining from the command line, or None (a random base)."""
    from mmrbench.testing.mini_pretrain import PretrainConfig

    if not a.pretrain_steps:
        return None
    return PretrainConfig(a.pretrain_steps, token_layer=a.pretrain_layer, coord_aux=a.pretrain_coord,
                          attn_aux=a.pretrain_attn, attn_layer=a.pretrain_attn_layer)


#: options that build a base: with --base they would be ignored, so giving one is an error
BASE_OPTIONS = ("pretrain_steps", "pretrain_layer", "pretrain_coord", "pretrain_attn", "pretrain_attn_layer",
                "rope_theta")


def check_base_options(a) -> None:
    """With ``--base`` no base is built: an option that would build one is refused rather than ignored, and
    ``--layers``, when given, must be the base's (a check that the command says what ran)."""
    given = [f"--{k.replace('_', '-')}" for k in BASE_OPTIONS if getattr(a, k) is not None]
    if given:
        raise SystemExit(f"{', '.join(given)}: these build a base; --base {a.base} is already built")
    config = json.loads((Path(a.base) / "config.json").read_text())
    layers = config.get("text_config", config)["num_hidden_layers"]
    if a.layers is not None and a.layers != layers:
        raise SystemExit(f"--layers {a.layers}, but the base {a.base} has {layers} decoder layers")


def stage_name(recipe: str, a) -> str:
    """A GRPO stage's folder (and its evaluation's, and the ``model.recipe`` written): the recipe's name, with the
    box reward appended when it is not the paper's, so both rewards' runs can sit in one ``--out`` and share the
    SFT adapters."""
    name = recipe.split("/")[-1]
    return name if a.grpo_box_reward == "paper" else f"{name}-{a.grpo_box_reward}"


def print_reward_note(box_reward: str | None) -> None:
    """Under a table whose GRPO rows did not train with the paper's reward, say so."""
    if box_reward != "paper":
        print(f"GRPO rows trained with grpo.box_reward = {box_reward!r} (graded; not the paper's reward)")


def table_name(a) -> str:
    return "table5.json" if a.grpo_box_reward == "paper" else f"table5-{a.grpo_box_reward}.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mini_overrides(model_dir: Path, manifest: Path, modules: list[str], seed: int) -> dict:
    """The mini model's settings; none of the keys an ablation recipe sets."""
    return {"model.base": str(model_dir), "model.device": "cpu", "model.gradient_checkpointing": False,
            "model.min_pixels": 0, "model.max_pixels": 0, "data.manifest": str(manifest),
            "lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0, "lora.target": "language",
            "lora.modules_to_save": modules}


def load(recipe: str, kind: str, overrides: dict):
    from mmrbench.train.recipe import load_recipe

    return load_recipe(RECIPES / f"{recipe}.toml", kind, overrides)


def finished(out: Path, recipe) -> bool:
    """Whether ``out`` holds an adapter trained with ``recipe`` (then it is reused, so a stopped run
    resumes). An adapter trained with other settings stops the script with the settings that differ:
    reusing it would put another configuration's figures in this table."""
    from mmrbench.train.common import recipe_changes

    if not (out / "adapter_config.json").exists():
        return False
    changes = recipe_changes(out, recipe)
    if changes is None:
        raise SystemExit(f"{out} holds an adapter but no {recipe.kind}_recipe.json: its settings are unknown; "
                         f"delete the folder or run with --fresh")
    if changes:
        raise SystemExit(f"{out} holds an adapter trained with other settings ({'; '.join(changes)}); "
                         f"delete that folder or run with --fresh")
    return True


def train_sft(name: str, base: dict, a, seed: int, out: Path) -> Path:
    from mmrbench.train.sft import run_sft

    r = load(name, "sft", {**base, "sft.max_steps": a.sft_steps, "sft.lr": a.sft_lr, "sft.batch_size": 8,
                           "sft.warmup_ratio": 0.05, "sft.weight_decay": 0.0, "sft.save_steps": 0,
                           "sft.lr_scheduler": "cosine", "sft.seed": seed,
                           **({"sft.attention_loss_weight": a.sft_attn_loss,
                               "sft.attention_loss_layer": a.sft_attn_layer}
                              if getattr(a, "sft_attn_loss", 0.0) else {})})
    if not finished(out, r):
        run_sft(r, out, progress=False)
    return out


def train_grpo(row: Row, base: dict, a, seed: int, sft_dirs: dict[str, Path], out: Path) -> Path:
    from mmrbench.train.grpo import run_grpo

    ov = {**base, "grpo.max_steps": a.grpo_steps, "grpo.lr": a.grpo_lr, "grpo.prompt_batch": a.prompt_batch,
          "grpo.group_size": a.group, "grpo.mini_batch": a.mini_batch, "grpo.max_new_tokens": a.max_new_tokens,
          "grpo.warmup_ratio": 0.0, "grpo.save_steps": 0, "grpo.lr_scheduler": "constant", "grpo.seed": seed}
    if a.grpo_box_reward != "paper":
        ov["grpo.box_reward"] = a.grpo_box_reward
    if a.grpo_beta != -1.0:  # the sentinel only: any other value, negatives too, goes to the recipe's checks
        ov["grpo.beta"] = a.grpo_beta
    if row.sft is not None:  # the recipe's init_adapter names the SFT run; point it at ours
        ov["grpo.init_adapter"] = str(sft_dirs[row.sft])
    r = load(row.recipe, "grpo", ov)
    if row.sft is None:
        assert not r.train.init_adapter, "no-cold-start must not start from an adapter"
    if not finished(out, r):
        run_grpo(r, out, progress=False)
    return out


def evaluate(adapter: Path, eval_manifest: Path, variant: str, recipe: str, out: Path, max_new_tokens: int) -> dict:
    """Held-out evaluation through the harness; writes result.json with model.recipe; returns its metrics."""
    from mmrbench.cards import parse_spec, with_overrides
    from mmrbench.runner import EvalOptions, run_eval

    if out.exists():
        shutil.rmtree(out)
    # greedy, batched as the mini benchmark evaluates; max_new_tokens as in training
    card = with_overrides(parse_spec(f"hf:{adapter}"), batch_size=16,
                          sampling={"temperature": 0.0, "max_new_tokens": max_new_tokens})
    run_eval(card, eval_manifest, out, EvalOptions(split="test", variant=variant, progress=False, quiet=True))
    from mmrbench.results import read_result, write_result

    res_path = out / "result.json"
    result = read_result(res_path)
    result.model["recipe"] = recipe  # not part of the metrics hash (docs/leaderboard.md)
    write_result(res_path, result)
    res = result.to_json()
    # pooled over the held-out images of every subdataset (the mini benchmark has two: foam, carpet)
    det = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
    loc = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
    n = invalid = 0
    for sub in res["metrics"]["subdatasets"].values():
        n += sub["n"]
        invalid += sub["invalid"]
        for c in sub["categories"]:
            for k in det:
                det[k] += c["det_counts"].get(k, 0)
                loc[k] += c["loc_counts"].get(k, 0)
    return {"det": (det["tp"] + det["tn"]) / max(sum(det.values()), 1),
            "loc": loc["tp"] / max(loc["tp"] + loc["fp"] + loc["fn"], 1), "n": n, "invalid": invalid}


# t quantiles (0.975) for 1..9 degrees of freedom: a 95 % interval over a handful of seeds
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_interval(xs: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95 % t-interval over seeds (None with one seed)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, None
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, _T975.get(n - 1, 1.96) * sd / math.sqrt(n)


def fmt(xs: list[float]) -> str:
    m, h = mean_interval([100 * x for x in xs])
    return f"{m:5.1f}" if h is None else f"{m:5.1f} ± {h:4.1f}"


def render(table: dict[str, dict[int, dict]], majority: float, seeds: list[int]) -> str:
    lines = [f"{'Table 5 (mini)':<26} {'det. acc (%)':>14} {'loc. acc (%)':>14}  per seed det/loc",
             "-" * 90]
    for row in ROWS:
        per = table.get(row.label, {})
        if not per:
            continue
        det = [per[s]["det"] for s in seeds if s in per]
        loc = [per[s]["loc"] for s in seeds if s in per]
        seeds_txt = "  ".join(f"s{s}:{100 * per[s]['det']:.1f}/{100 * per[s]['loc']:.1f}" for s in seeds if s in per)
        lines.append(f"{row.label:<26} {fmt(det):>14} {fmt(loc):>14}  {seeds_txt}")
    full, sft = table.get(ROWS[0].label, {}), table.get("w/o RL", {})
    paired = [s for s in seeds if s in full and s in sft]
    if paired:
        # GRPO's effect over its own cold start, seed by seed (the same SFT adapter under both rows)
        d_det = [full[s]["det"] - sft[s]["det"] for s in paired]
        d_loc = [full[s]["loc"] - sft[s]["loc"] for s in paired]
        lines.append(f"{'GRPO - SFT (paired)':<26} {fmt(d_det):>14} {fmt(d_loc):>14}  over seeds {paired}")
    lines.append(f"majority-class detection rate: {100 * majority:.1f} %; intervals: mean ± 95 % t-interval over "
                 f"{len(seeds)} seed(s) (none with one seed)")
    return "\n".join(lines)


def combine(dirs: list[Path]) -> int:
    """Print one table from several runs' ``table5.json`` (seeds run in parallel processes; a path ending in
    ``.json`` names the file, e.g. a ``table5-giou.json``): they must share the held-out split and the GRPO
    reward; a seed may come from one run only."""
    table: dict[str, dict[int, dict]] = {}
    seeds: list[int] = []
    data = None
    reward = None
    for d in dirs:
        t = json.loads((d if d.suffix == ".json" else d / "table5.json").read_text())
        if data is not None and t["data"] != data:
            raise SystemExit(f"{d}: another data split than {dirs[0]} ({t['data']} vs {data})")
        data = t["data"]
        r = t.get("args", {}).get("grpo_box_reward", "paper")  # runs before the option trained with the paper's
        if reward is not None and r != reward:
            raise SystemExit(f"{d}: GRPO rows trained with box reward {r!r}, {dirs[0]} with {reward!r}")
        reward = r
        for s in t["seeds"]:
            if s in seeds:
                raise SystemExit(f"{d}: seed {s} is in two of the runs")
            seeds.append(s)
        for label, per in t["rows"].items():
            for s, m in per.items():
                table.setdefault(label, {})[int(s)] = m
    assert data is not None
    print(render(table, data["majority_rate"], sorted(seeds)))
    print_reward_note(reward)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/table5_mini")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny images, a few steps, one seed")
    ap.add_argument("--fresh", action="store_true", help="delete previous runs under --out first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-min", type=float, default=60.0,
                    help="do not start another seed when the time per seed so far says it would end past this "
                         "many minutes (0 = no limit); the table then has the seeds that finished")
    ap.add_argument("--lora-only", action="store_true",
                    help="do not train the output head fully: LoRA alone, as the paper on its pretrained base "
                         "(meant with --pretrain-steps)")
    ap.add_argument("--base", default="", metavar="DIR",
                    help="train every seed from this base model folder (e.g. one mini_pretrain_check.py --save wrote, "
                         "its tokenizer trained on this data) instead of building one per seed; the seeds then vary "
                         "the training runs only, and the --pretrain-*, --layers and --rope-theta options are the base's")
    ap.add_argument("--rows", default="", help="comma-separated recipe names to run (default: all seven rows)")
    ap.add_argument("--combine", default="", metavar="DIR,DIR",
                    help="only print the table of earlier runs' --out folders together (seeds run in parallel)")
    for k, v in FULL.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None, help=f"{HELP[k] + '; ' if k in HELP else ''}default {v} ({QUICK[k]} with --quick)")
    a = ap.parse_args(argv)
    if a.combine:
        return combine([Path(d) for d in a.combine.split(",") if d])
    if a.base:
        check_base_options(a)
    for k, v in (QUICK if a.quick else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)

    import torch

    torch.set_num_threads(a.threads)
    mini = _mini()
    out = Path(a.out)
    if a.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",") if s != ""]
    wanted = {r for r in a.rows.split(",") if r}
    rows = [r for r in ROWS if not wanted or r.recipe.split("/")[-1] in wanted or r.recipe in wanted]
    t0 = time.perf_counter()

    # data: one held-out split for every seed (data seed 0), so seeds vary only the training runs
    train_m, _, _, eval_m, stats = mini.make_data(out, 0, "large", ["foam", "carpet"], a.per_class)
    if a.eval_limit:
        from mmrbench.data.manifest import read_manifest, write_manifest
        ev = read_manifest(eval_m).samples[: a.eval_limit]
        eval_m = eval_m.with_name(f"{eval_m.stem}_first{a.eval_limit}.jsonl")
        write_manifest(eval_m, ev)
        stats.update(eval=len(ev), majority_rate=mini.majority_rate(ev))
    log(f"data: {stats['train']} training / {stats['eval']} held-out images, majority {stats['majority_rate']:.1%}")

    table: dict[str, dict[int, dict]] = {}
    done: list[int] = []
    for seed in seeds:
        spent = time.perf_counter() - t0
        if done and a.budget_min and spent + spent / len(done) > 60 * a.budget_min:
            log(f"budget: {spent / 60:.1f} min for {len(done)} seed(s); seed {seed} would end past "
                f"{a.budget_min:.0f} min, not started")
            break
        sd = out / f"seed{seed}"
        model_dir = (Path(a.base) if a.base else
                     mini.build_model(sd, seed, a.image_side, 128, a.layers, train_m, "default", pretrain_config(a),
                                      a.rope_theta))
        base = mini_overrides(model_dir, train_m, mini.trained_modules("frozen", False, head=not a.lora_only), seed)
        sft_dirs: dict[str, Path] = {}
        for row in rows:
            ts = time.perf_counter()
            if row.sft is not None and row.sft not in sft_dirs:
                sft_dirs[row.sft] = train_sft(row.sft, base, a, seed, sd / row.sft.split("/")[-1])
            if row.recipe.endswith("-sft"):   # w/o RL: the SFT adapter itself
                name = row.recipe.split("/")[-1]
                adapter = sft_dirs[row.sft]
                variant = load(row.recipe, "sft", base).data.prompt_variant
            else:  # trained with another reward, named after it: the board must not take it for the recipe
                name = stage_name(row.recipe, a)
                adapter = train_grpo(row, base, a, seed, sft_dirs, sd / name)
                variant = load(row.recipe, "grpo", {**base, **({"grpo.init_adapter": str(sft_dirs[row.sft])} if row.sft else {})}).data.prompt_variant
            m = evaluate(adapter, eval_m, variant, name, sd / "eval" / name, a.max_new_tokens)
            table.setdefault(row.label, {})[seed] = m
            log(f"seed {seed} {row.label}: det {m['det']:.1%} loc {m['loc']:.1%} ({time.perf_counter() - ts:.0f} s)")
        done.append(seed)
    wall = time.perf_counter() - t0
    print()
    print(render(table, stats["majority_rate"], done))
    print_reward_note(a.grpo_box_reward)
    if len(done) < len(seeds):
        print(f"seeds not run (time budget {a.budget_min:.0f} min): {[s for s in seeds if s not in done]}")
    print(f"wall time {wall / 60:.1f} min; result.json per row under {out}/seed*/eval/<recipe>/")
    (out / table_name(a)).write_text(json.dumps({"data": stats, "seeds": done, "seeds_asked": seeds, "args": vars(a), "wall_s": wall,
                                                 "rows": {k: {str(s): v for s, v in d.items()} for k, d in table.items()}},
                                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
