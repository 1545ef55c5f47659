"""The command line's exit codes, and the one that ends a run.

0: every selected sample answered / the command did its job; 2: bad input or options (one line on
stderr, nothing sent); 3: a run finished but some samples have no answer (result.json written; re-run
to retry them); 1: an internal error (a bug: one line, the traceback with ``-v``); 130: interrupted.
"""
from __future__ import annotations

import sys
from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130


def exit_code(result: Any) -> int:
    """0 when every selected sample ended answered; else one summary line on stderr and 3. ``result``
    is anything carrying a ``run_summary`` (a Result, an MMAD report)."""
    summary = getattr(result, "run_summary", None)
    if summary is not None and not summary.complete:
        print(f"mmrbench: incomplete: {summary.line()}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK
