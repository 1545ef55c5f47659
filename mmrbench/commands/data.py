"""``mmrbench data ...``: benchmark data commands, one module per subcommand."""
from __future__ import annotations

#: subcommand modules under mmrbench.commands
SUBCOMMANDS = ["data_synth", "data_import", "data_build", "data_split", "data_textgen", "data_check"]


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="generate, import, split and annotate benchmark data")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    dsub.required = True
    from mmrbench.cli import add_command_parsers

    add_command_parsers(dsub, SUBCOMMANDS)
