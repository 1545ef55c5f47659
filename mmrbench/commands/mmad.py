"""``mmrbench mmad ...``: the MMAD benchmark (protocol ``mmad-v1``); the commands live in
:mod:`mmrbench.mmad.commands` beside the protocol they drive."""
from __future__ import annotations


def add_parser(sub) -> None:
    from mmrbench.mmad.commands import add_parser as add_mmad

    add_mmad(sub)
