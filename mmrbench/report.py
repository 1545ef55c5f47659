"""Rendering rows of metrics as a terminal table, Markdown (tabulate) or JSON."""
from __future__ import annotations

import json


def render_rows(rows: list[dict], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if not rows:
        return "(no rows)"
    if fmt not in ("table", "markdown"):
        raise ValueError(f"unknown format '{fmt}' (table, markdown, json)")
    from tabulate import tabulate

    headers = list(rows[0].keys())
    body = [["" if r.get(h) is None else str(r.get(h)) for h in headers] for r in rows]
    # cells are rendered as given (no number parsing: "75.0/66.7" and "0.50" keep their text)
    return tabulate(body, headers=headers, tablefmt="github" if fmt == "markdown" else "simple",
                    disable_numparse=True)
