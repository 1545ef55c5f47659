"""``LEADERBOARD.md``: the Table-4 layout (pandas + tabulate), rows grouped by model kind.

Columns are subdataset x {Acc, Recall, Precision}; each cell is ``det/loc`` in percent with one
decimal, as in the paper. Every model name, reason and note is escaped: Markdown renders raw HTML,
so ``<``, ``>`` and ``&`` become entities, and Markdown's own punctuation gets a backslash, so a
name like ``<script>`` or ``[x](javascript:...)`` shows as text.
"""
from __future__ import annotations

import re
from typing import Any

from mmrbench.leaderboard.board import GROUP_ORDER, METRICS, Board
from mmrbench.leaderboard.reference import KIND_TITLES, NOT_TRANSCRIBED

BADGES = {"verified": "✅ verified", "reported": "📄 reported", "unverified": "⚠️ unverified"}
METRIC_TITLES = {"accuracy": "Acc", "recall": "Recall", "precision": "Precision"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: Any) -> str:
    """Plain text safe inside a Markdown table cell: no HTML, no Markdown syntax, no line breaks."""
    s = str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return re.sub(r"[\r\n\t]+", " ", s)


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def cell(c: dict[str, float | None] | None) -> str:
    """``det/loc`` like the paper: ``88.8/66.3``; ``85.7/-`` when there is no localization."""
    if not c or (c.get("det") is None and c.get("loc") is None):
        return ""
    loc = "-" if c.get("loc") is None else pct(c["loc"])
    return f"{pct(c.get('det'))}/{loc}"


def _table(entries: list[dict[str, Any]], subdatasets: list[str]) -> str:
    import pandas as pd

    rows = []
    for e in entries:
        row = {"Model": md_escape(e["name"]) + ("" if e["variant"] == "default" else f" \\[{md_escape(e['variant'])}\\]"),
               "Status": BADGES.get(e["status"], md_escape(e["status"]))}
        for sub in subdatasets:
            for m in METRICS:
                row[f"{md_escape(sub)} {METRIC_TITLES[m]}"] = cell((e["cells"].get(sub) or {}).get(m))
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.to_markdown(index=False, disable_numparse=True)


def _ci_table(entries: list[dict[str, Any]], subdatasets: list[str]) -> str | None:
    import pandas as pd

    rows = []
    for e in entries:
        ci = (e.get("ci") or {}).get("subdatasets")
        if not ci:
            continue
        for sub in subdatasets:
            if sub not in ci:
                continue
            row = {"Model": md_escape(e["name"]), "Subdataset": md_escape(sub)}
            for m in METRICS:
                parts = []
                for part in ("det", "loc"):
                    c = ci[sub][part][m]
                    parts.append(f"{pct(c['value'])} [{pct(c['low'])}, {pct(c['high'])}]")
                row[METRIC_TITLES[m]] = " / ".join(parts)
            rows.append(row)
    if not rows:
        return None
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def render_markdown(board: Board) -> str:
    subs = board.subdatasets
    out = ["# MMR-AD leaderboard", "",
           "Protocol `mmr-ad-v1`: each cell is `det/loc` in percent (image-level detection / box-level "
           "localization at IoU >= 0.1), macro-averaged over the categories of each subdataset. "
           "✅ verified = re-scored from the submitted predictions against the manifest named by sha256; "
           "📄 reported = copied from the MMR-AD paper (Table 4), not re-scorable; "
           "⚠️ unverified = claimed numbers that could not be reproduced (reasons below).", ""]
    for kind in GROUP_ORDER:
        group = [e for e in board.entries if e["kind"] == kind]
        if not group:
            continue
        # only the subdatasets this group was scored on: the paper's rows and runs on another
        # benchmark (e.g. the bundled synthetic one) would otherwise share a table of empty columns
        group_subs = [s for s in subs if any(e["cells"].get(s) for e in group)] or subs
        out += [f"## {md_escape(KIND_TITLES[kind])}", "", _table(group, group_subs), ""]
    ci = _ci_table(board.entries, subs)
    if ci:
        r = next(e["ci"] for e in board.entries if e.get("ci"))
        out += ["## 95% bootstrap confidence intervals", "",
                f"Percentile bootstrap ({r['resamples']} resamples, seed {r['seed']}), images resampled within "
                "categories; each cell is `det [low, high] / loc [low, high]`.", "", ci, ""]
    unverified = [e for e in board.entries if e["status"] == "unverified"]
    if unverified:
        out += ["## Why entries are unverified", ""]
        for e in unverified:
            out.append(f"- **{md_escape(e['name'])}** (`{md_escape(e['id'])}`): "
                       + "; ".join(md_escape(r) for r in e["reasons"]))
        out.append("")
    if any(e["provenance"] == "reported" for e in board.entries):
        out += ["## Reported rows not yet transcribed", "",
                "The reference entries hold only cells confirmed from a reprint of the paper's Table 4; "
                "missing cells are blank. Not transcribed: " + ", ".join(md_escape(n) for n in NOT_TRANSCRIBED) + ".",
                ""]
    if board.skipped:
        out += ["## Skipped files", ""] + [f"- {md_escape(s)}" for s in board.skipped] + [""]
    return "\n".join(out)
