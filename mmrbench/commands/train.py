"""``mmrbench train sft|grpo``: the Anomaly-R1 reference trainer.

Run data-parallel by launching the same command under torchrun, e.g.
``torchrun --nproc_per_node 4 -m mmrbench train grpo --recipe ... --out ...``.
"""
from __future__ import annotations

import argparse

#: Table-5 ablation flags -> recipe overrides
ABLATION_FLAGS = {
    "answer_only": ("data.answer_only", True, "ablation: no reasoning text, the target is the answer only"),
    "no_reference": ("data.prompt_variant", "no_reference", "ablation: query image only, no normal reference"),
    "domain_knowledge": ("data.prompt_variant", "domain_knowledge", "add the category's anomaly types to the prompt"),
}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train Anomaly-R1 (LoRA SFT cold start, then GRPO)")
    tsub = p.add_subparsers(dest="stage", metavar="STAGE")
    tsub.required = True
    for stage, help_ in (("sft", "supervised cold start on think-then-answer targets"),
                         ("grpo", "GRPO with contrastive sampling")):
        q = tsub.add_parser(stage, help=help_)
        q.add_argument("--recipe", default=None, help=f"recipe TOML (e.g. baselines/anomaly-r1/{stage}.toml); "
                                                      "default: the paper's hyper-parameters")
        q.add_argument("--data", default=None, help="training manifest.jsonl (overrides data.manifest)")
        q.add_argument("--model", default=None, help="base model: hub id or local folder (overrides model.base)")
        q.add_argument("--out", required=True, help="run folder: checkpoints, logs, final adapter")
        q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help=f"override a recipe value, e.g. {stage}.lr=1e-5 (repeatable)")
        q.add_argument("--device", default=None, help="auto | cpu | cuda")
        q.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16")
        q.add_argument("--no-resume", action="store_true", help="start over even if the run folder has checkpoints")
        for flag, (_, _, h) in ABLATION_FLAGS.items():
            q.add_argument("--" + flag.replace("_", "-"), action="store_true", help=h)
        if stage == "grpo":
            q.add_argument("--init-adapter", default=None, help="SFT adapter folder to start from (cold start)")
            q.add_argument("--no-cold-start", action="store_true", help="ablation: start GRPO from a fresh LoRA")
            q.add_argument("--no-contrastive", action="store_true", help="ablation: plain GRPO groups")
            q.add_argument("--negatives-model", default=None,
                           help="adapter spec that writes opposite-hint negatives (e.g. openai:gpt-4o); default: the policy")
        q.set_defaults(func=run)
    q = tsub.add_parser("export", help="merge a trained adapter into its base: one self-contained model folder",
                        description="Merge a LoRA adapter (the output of train sft/grpo) into its base model and "
                                    "save the weights, the base's processor and export.json (adapter, base, "
                                    "adapter weights' SHA-256) to a new folder: what vllm serve, LMDeploy or "
                                    "a model card's hf provider load without the base's original location.")
    q.add_argument("--adapter", required=True, help="adapter folder (has adapter_config.json)")
    q.add_argument("--out", required=True, help="new folder for the merged model")
    q.add_argument("--base", default=None, help="base model (default: the adapter's base_model_name_or_path)")
    q.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    q.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from mmrbench.train.export import export_merged

    info = export_merged(args.adapter, args.out, base=args.base, dtype=args.dtype)
    print(json.dumps({"stage": "export", "out": args.out, **asdict(info)}))
    return 0


def overrides_from_args(args: argparse.Namespace) -> dict:
    from mmrbench.errors import ConfigError
    from mmrbench.train.recipe import parse_value

    ov: dict = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set '{item}': expected SECTION.KEY=VALUE")
        k, v = item.split("=", 1)
        ov[k.strip()] = parse_value(v.strip())
    if args.data:
        ov["data.manifest"] = args.data
    if args.model:
        ov["model.base"] = args.model
    if args.device:
        ov["model.device"] = args.device
    if args.dtype:
        ov["model.dtype"] = args.dtype
    variants = [f for f in ("no_reference", "domain_knowledge") if getattr(args, f)]
    if len(variants) > 1:
        raise ConfigError("--no-reference and --domain-knowledge are separate ablations; pick one")
    for flag, (key, value, _) in ABLATION_FLAGS.items():
        if getattr(args, flag):
            ov[key] = value
    if args.stage == "grpo":
        if args.init_adapter and args.no_cold_start:
            raise ConfigError("--init-adapter and --no-cold-start contradict each other")
        if args.init_adapter:
            ov["grpo.init_adapter"] = args.init_adapter
        if args.no_cold_start:
            ov["grpo.init_adapter"] = ""
        if args.no_contrastive:
            ov["grpo.contrastive"] = False
        if args.negatives_model:
            ov["grpo.negatives_model"] = args.negatives_model
    return ov


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mmrbench.errors import require
    from mmrbench.train.recipe import load_recipe

    require("transformers", "train", "training")
    require("peft", "train", "training")
    recipe = load_recipe(args.recipe, args.stage, overrides_from_args(args))
    if recipe.kind == "grpo" and recipe.train.init_adapter:
        ia = Path(recipe.train.init_adapter)
        if not (ia / "adapter_config.json").exists():
            from mmrbench.errors import ConfigError
            raise ConfigError(f"grpo.init_adapter '{ia}' is not an adapter folder (no adapter_config.json)")
    from mmrbench.train.distributed import init_from_env

    dist = init_from_env(recipe.model.device if recipe.model.device != "auto" else "cuda")
    if args.stage == "sft":
        from mmrbench.train.sft import run_sft

        res = run_sft(recipe, args.out, dist=dist, resume=not args.no_resume)
        summary = {"stage": "sft", "out": str(res.out_dir), "steps": res.steps, "last_loss": res.last_loss}
    else:
        from mmrbench.train.grpo import run_grpo

        tr = run_grpo(recipe, args.out, dist=dist, resume=not args.no_resume)
        summary = {"stage": "grpo", "out": str(tr.out), "steps": tr.total_steps}
    if dist.is_main:
        print(json.dumps(summary))
    return 0
