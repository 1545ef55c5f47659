"""``mmrbench models``: the providers and model cards this installation knows."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list providers and model cards (and whether their API keys are set)")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--cards-dir", default=None, help="folder of model-card TOMLs (default: the repository's adapters/)")
    p.set_defaults(func=run)


def rows(cards_dir=None) -> tuple[list[dict], list[dict]]:
    import importlib.util
    import os

    from mmrbench.adapters.registry import providers
    from mmrbench.cards import list_cards

    prov = []
    for info in providers():
        module = info.target.split(":")[0]
        try:
            present = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            present = False
        prov.append({"provider": info.name, "extra": info.extra or "-", "module": "yes" if present else "not in this build",
                     "description": info.description})
    cards = []
    for c in list_cards(cards_dir):
        env = c.api_key_env
        if env:
            key = "set" if os.environ.get(env, "").strip() else ("not set" if c.provider in ("openai", "gemini") else "optional, not set")
        else:
            key = "-"
        if c.provider == "openai" and env and not c.require_key and c.base_url and "api.openai.com" not in c.base_url:
            key = "set" if os.environ.get(env, "").strip() else "optional, not set"
        if c.provider == "gemini" and key == "not set" and os.environ.get("GOOGLE_API_KEY", "").strip():
            key = "set (GOOGLE_API_KEY)"
        cards.append({"card": c.name, "model": c.title, "provider": c.provider, "model_id": c.model_id,
                      "convention": c.convention, "key_env": env or "-", "key": key})
    return prov, cards


def run(args: argparse.Namespace) -> int:
    import json

    from mmrbench.report import render_rows

    prov, cards = rows(args.cards_dir)
    if args.format == "json":
        print(json.dumps({"providers": prov, "cards": cards}, indent=2))
        return 0
    print("Providers")
    print(render_rows(prov, args.format))
    print()
    print("Model cards (use the card name with --model; PROVIDER:MODEL works for any model)")
    print(render_rows(cards, args.format))
    return 0
