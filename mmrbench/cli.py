"""``mmrbench`` command line.

Each command lives in its own module under :mod:`mmrbench.commands` with ``add_parser`` and ``run``;
heavy imports happen inside ``run`` so ``mmrbench --help`` stays instant. User errors become one
line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mmrbench import __version__
from mmrbench.errors import MMRBenchError

#: top-level command modules, in help order
COMMANDS = [
    "bundled", "eval", "score", "merge", "models", "data", "validate", "submit", "leaderboard",
    "compare", "gad", "train",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrbench", description="MMR-AD benchmark harness and leaderboard")
    parser.add_argument("--version", action="version", version=f"mmrbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_command_parsers(sub, COMMANDS)
    return parser


def add_command_parsers(sub, names: list[str]) -> None:
    """Let each command module (``mmrbench.commands.<name>``) register its own parser."""
    for name in names:
        importlib.import_module(f"mmrbench.commands.{name}").add_parser(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = args.func(args)
    except MMRBenchError as exc:
        print(f"mmrbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmrbench: interrupted (finished answers are saved; run the same command to resume)", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
