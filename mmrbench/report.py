"""Rendering rows of metrics as a terminal table, Markdown or JSON."""
from __future__ import annotations

import json


def render_rows(rows: list[dict], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if not rows:
        return "(no rows)"
    headers = list(rows[0].keys())
    body = [[str(r.get(h, "")) for h in headers] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    if fmt != "table":
        raise ValueError(f"unknown format '{fmt}' (table, markdown, json)")
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths]), *map(fmt_row, body)])
