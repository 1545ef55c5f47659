"""``mmrbench eval``: run a model over a manifest, write predictions.jsonl, result.json, run.json."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a manifest (resumable; writes result.json)",
                       description="Evaluate a model (spec PROVIDER:MODEL, patchcore, padim, a card name or a card "
                                   "TOML) on a manifest. Re-run the same command to resume: answered samples are "
                                   "skipped, failed ones asked again.")
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="openai:gpt-4o, gemini:gemini-2.5-pro, hf:PATH_OR_ID, vllm:..., patchcore, a card name, or card.toml")
    p.add_argument("--data", required=True, metavar="MANIFEST", help="manifest.jsonl (or its folder)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; reused to resume)")
    p.add_argument("--subdatasets", default=None, help="comma-separated subdatasets (default: all)")
    p.add_argument("--split", default="test", help="manifest split (default: test)")
    p.add_argument("--limit", type=int, default=None, help="first N samples of the selection")
    p.add_argument("--shard", default=None, metavar="I/N", help="run shard I of N (0 <= I < N); merge with 'mmrbench merge'")
    p.add_argument("--concurrency", type=int, default=None, help="parallel requests (API providers)")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="API providers: send from N processes, the concurrency split between them (default 1); "
                        "for fast local servers, where one Python process's CPU sets the pace")
    p.add_argument("--batch-size", type=int, default=None, help="requests per batch (local engines)")
    p.add_argument("--base-url", default=None,
                   help="server URL: an OpenAI-compatible one for openai (e.g. http://127.0.0.1:8000/v1), or a Gemini "
                        "REST endpoint or proxy for gemini (e.g. http://127.0.0.1:9000)")
    p.add_argument("--prompt-variant", choices=("default", "no_reference", "domain_knowledge"), default=None)
    p.add_argument("--no-reference", action="store_true", help="same as --prompt-variant no_reference")
    p.add_argument("--domain-knowledge", action="store_true", help="same as --prompt-variant domain_knowledge")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--convention", default=None, help="override the card's box convention (pixel, norm1000, gemini, norm1)")
    p.add_argument("--max-image-side", type=int, default=None, help="API providers: downscale images to this longest side")
    p.add_argument("--timeout", type=float, default=None, help="seconds per API request")
    p.add_argument("--retries", type=int, default=None, help="attempts per request for transient errors (default 6)")
    p.add_argument("--retry-wait", type=float, default=None, metavar="S",
                   help="first backoff wait in seconds for transient errors (doubles each retry, jittered; default 1)")
    p.add_argument("--max-cost", type=float, default=None, metavar="USD",
                   help="stop sending once the run folder's estimated spend reaches this many US dollars (needs the "
                        "card's prices); exit 3; re-running resumes (raise it to go on)")
    p.add_argument("--dry-run", action="store_true",
                   help="estimate tokens and cost of the samples still to ask (image tokens by the provider's rule), "
                        "then exit: no model is loaded, no request is sent, nothing is written")
    p.add_argument("--min-concurrency", type=int, default=None, metavar="N",
                   help="floor of adaptive concurrency (API providers lower requests in flight on HTTP 429, down to "
                        "N, and raise them back to --concurrency when the 429s stop; default 1)")
    p.add_argument("--no-adaptive", action="store_true",
                   help="keep --concurrency requests in flight even on HTTP 429 (retries still back off)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="provider option (e.g. lora=PATH, tensor_parallel_size=4); repeatable")
    p.add_argument("--device", default="cpu", help="device for classical detectors")
    p.add_argument("--weights", default=None, help="backbone weights file for classical detectors")
    p.add_argument("--recipe", default=None, help="recipe TOML for classical detectors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict:
    from mmrbench.errors import ConfigError
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"--option needs KEY=VALUE, got '{it}'")
        out[k.strip()] = _scalar(v.strip())
    return out


def _scalar(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def variant_of(args) -> str:
    from mmrbench.errors import ConfigError
    chosen = [v for v, on in (("no_reference", args.no_reference), ("domain_knowledge", args.domain_knowledge)) if on]
    if args.prompt_variant:
        chosen.append(args.prompt_variant)
    if len(set(chosen)) > 1:
        raise ConfigError(f"conflicting prompt variants: {', '.join(sorted(set(chosen)))}")
    return chosen[0] if chosen else "default"


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from mmrbench.cards import parse_spec, with_overrides
    from mmrbench.runner import EvalOptions, parse_shard, run_eval

    check_run_params(args)
    card = parse_spec(args.model)
    card = with_overrides(
        card, base_url=args.base_url, concurrency=args.concurrency, batch_size=args.batch_size,
        timeout_s=args.timeout, convention=args.convention,
        sampling={"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                  "min_p": args.min_p, "seed": args.seed},
        options=parse_options(args.option),
        image={"resize": "max_side", "max_side": args.max_image_side} if args.max_image_side is not None else None)
    retry = None
    if args.retries is not None or args.retry_wait is not None:
        from mmrbench.adapters.retry import RetryPolicy
        retry = RetryPolicy()
        if args.retries is not None:
            retry = dataclasses.replace(retry, max_attempts=args.retries)
        if args.retry_wait is not None:
            wait = args.retry_wait
            retry = dataclasses.replace(retry, initial_s=wait, max_wait_s=max(wait, min(retry.max_wait_s, wait * 32)))
    subs = [s.strip() for s in args.subdatasets.split(",") if s.strip()] if args.subdatasets else None
    opts = EvalOptions(split=args.split, subdatasets=subs, limit=args.limit, variant=variant_of(args),
                       shard=parse_shard(args.shard) if args.shard else None, concurrency=args.concurrency,
                       progress=not args.no_progress, retry=retry, command=["mmrbench", *sys.argv[1:]],
                       device=args.device, weights=args.weights, recipe=args.recipe, max_cost=args.max_cost,
                       adaptive=not args.no_adaptive, min_concurrency=args.min_concurrency or 1,
                       processes=args.processes or 1)
    if args.dry_run:
        from mmrbench.runner import dry_run
        print(dry_run(card, args.data, args.out, opts))
        return 0
    from mmrbench.exitcodes import exit_code
    return exit_code(run_eval(card, args.data, args.out, opts))


def check_run_params(args: argparse.Namespace) -> None:
    """Types and ranges of the run's own flags, before the model loads or a request is sent (the
    card's sampling and limits are checked by :func:`mmrbench.cards.check_values`)."""
    from typing import Annotated, Optional

    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from mmrbench.errors import ConfigError
    from mmrbench.validation import validated

    class RunParams(BaseModel):
        model_config = ConfigDict(strict=True)
        limit: Optional[Annotated[int, Field(ge=1)]] = None
        retries: Optional[Annotated[int, Field(ge=1, le=100)]] = None
        retry_wait: Optional[Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]] = None
        max_image_side: Optional[Annotated[int, Field(ge=1, le=100_000)]] = None
        max_cost: Optional[Annotated[float, Field(gt=0, le=10_000_000, allow_inf_nan=False)]] = None
        concurrency: Optional[Annotated[int, Field(ge=1, le=4096)]] = None
        min_concurrency: Optional[Annotated[int, Field(ge=1, le=4096)]] = None
        processes: Optional[Annotated[int, Field(ge=1, le=256)]] = None

        @model_validator(mode="after")
        def _floor_below_ceiling(self):
            if self.min_concurrency and self.concurrency and self.min_concurrency > self.concurrency:
                raise ValueError(f"--min-concurrency {self.min_concurrency} is above --concurrency {self.concurrency}")
            return self

    keys = ("limit", "retries", "retry_wait", "max_image_side", "max_cost", "concurrency", "min_concurrency",
            "processes")
    validated(RunParams, {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None},
              "command line", error=ConfigError)
