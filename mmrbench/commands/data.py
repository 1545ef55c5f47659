"""``mmrbench data ...``: benchmark data commands, one module per subcommand."""
from __future__ import annotations

import importlib

#: subcommand modules under mmrbench.commands
SUBCOMMANDS = ["data_synth", "data_import", "data_split", "data_textgen", "data_check"]


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="generate, import, split and annotate benchmark data")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    dsub.required = True
    for name in SUBCOMMANDS:
        module_name = f"mmrbench.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.add_parser(dsub)
