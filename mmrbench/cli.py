"""``mmrbench`` command line.

Each command lives in its own module under :mod:`mmrbench.commands` with ``add_parser`` and ``run``;
heavy imports happen inside ``run`` so ``mmrbench --help`` stays instant. User errors become one
line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from mmrbench import __version__
from mmrbench.errors import MMRBenchError
from mmrbench.exitcodes import EXIT_INCOMPLETE, EXIT_INTERNAL, EXIT_USAGE  # noqa: F401 (re-exported)

#: top-level command modules, in help order
COMMANDS = [
    "bundled", "eval", "score", "merge", "models", "data", "validate", "submit", "leaderboard",
    "compare", "gad", "mmad", "train",
]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (the usage text stays behind --help)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mmrbench", description="MMR-AD benchmark harness and leaderboard")
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
        if args.verbose:
            traceback.print_exc()
        print(f"mmrbench: error: {_one_line(exc)}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except KeyboardInterrupt:
        print("mmrbench: interrupted (finished answers are saved; run the same command to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mmrbench ... | head`: the reader left; nothing to report
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return 0
    except RecursionError:
        if args.verbose:
            traceback.print_exc()
        print("mmrbench: error: input nested too deeply to read", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug, not a user error: one line, the traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(f"mmrbench: internal error: {type(exc).__name__}: {_one_line(exc)} (run with -v for the traceback "
              f"and please report it)", file=sys.stderr)
        return EXIT_INTERNAL
    return int(rc or 0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:2000] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
