"""``LEADERBOARD.md``: one section per benchmark, each in the Table-4 layout (pandas + tabulate), rows
grouped by model kind, then the "Anomaly-R1 ablations" (Table 5 and runs of the ablation recipes).

Columns are subdataset x {Acc, Recall, Precision}; each cell is ``det/loc`` in percent with one
decimal, as in the paper. Every model name, reason and note is escaped: Markdown renders raw HTML,
so ``<``, ``>`` and ``&`` become entities, and Markdown's own punctuation gets a backslash, so a
name like ``<script>`` or ``[x](javascript:...)`` shows as text.
"""
from __future__ import annotations

import re
from typing import Any

from mmrbench.leaderboard.board import GROUP_ORDER, METRICS, Board
from mmrbench.leaderboard.reference import ABLATION, KIND_TITLES, NOT_REPORTED

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


def cell(c: dict[str, float | None] | None, loc_reported: bool = True) -> str:
    """``det/loc`` like the paper: ``88.8/66.3``; ``85.7/not reported`` for a paper row without
    localization (never a zero); ``85.7/-`` for a run without localization numbers."""
    if not c or (c.get("det") is None and c.get("loc") is None):
        return ""
    loc = (NOT_REPORTED if not loc_reported else "-") if c.get("loc") is None else pct(c["loc"])
    return f"{pct(c.get('det'))}/{loc}"


def _table(entries: list[dict[str, Any]], subdatasets: list[str]) -> str:
    import pandas as pd

    rows = []
    for e in entries:
        name = md_escape(e["name"]) + ("" if e["variant"] == "default" else f" \\[{md_escape(e['variant'])}\\]")
        if e.get("recipe"):
            name += f" (recipe {md_escape(e['recipe'])})"
        row = {"Model": name,
               "Status": BADGES.get(e["status"], md_escape(e["status"]))}
        for sub in subdatasets:
            for m in METRICS:
                row[f"{md_escape(sub)} {METRIC_TITLES[m]}"] = cell((e["cells"].get(sub) or {}).get(m),
                                                                   e.get("loc_reported", True))
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


def _benchmark_section(board: Board, b: dict[str, Any]) -> list[str]:
    subs = b["subdatasets"]
    out = [f"## {md_escape(b['name'])}", ""]
    if b.get("manifest_sha256"):
        out += [f"Manifest sha256 `{b['manifest_sha256']}`.", ""]
    main = board.benchmark_entries(b["key"], "main")
    for kind in GROUP_ORDER:
        group = [e for e in main if e["kind"] == kind]
        if not group:
            continue
        group_subs = [s for s in subs if any(e["cells"].get(s) for e in group)] or subs
        out += [f"### {md_escape(KIND_TITLES[kind])}", "", _table(group, group_subs), ""]
    abl = board.benchmark_entries(b["key"], "ablation")
    if abl:
        abl_subs = [s for s in subs if any(e["cells"].get(s) for e in abl)] or subs
        out += [f"### {md_escape(KIND_TITLES[ABLATION])}", "",
                "The paper's Table 5 (reported), with any run of a shipped ablation recipe "
                "(`baselines/anomaly-r1/ablations/`, named in the run's `model.recipe`) right after its row.", "",
                _table(abl, abl_subs), ""]
    ci = _ci_table(board.benchmark_entries(b["key"]), subs)
    if ci:
        r = next(e["ci"] for e in board.benchmark_entries(b["key"]) if e.get("ci"))
        out += ["### 95% bootstrap confidence intervals", "",
                f"Percentile bootstrap ({r['resamples']} resamples, seed {r['seed']}), images resampled within "
                "categories; each cell is `det [low, high] / loc [low, high]`.", "", ci, ""]
    return out


def _mmad_table(entries: list[dict[str, Any]], row: str, columns: list[str], *, source: bool) -> str:
    import pandas as pd

    from mmrbench.leaderboard.mmad import fmt, value_of

    group = {"mmad-published": "published", "baseline": "chance level", "submitted": "run"}
    rows = []
    for e in entries:
        m = e["mmad"]
        r = {"Model": md_escape(e["name"]), "Status": BADGES.get(e["status"], md_escape(e["status"])),
             "Group": group.get(e["kind"], md_escape(e["kind"])), "Shots": md_escape(m.get("shots")),
             "Scoring": md_escape(m.get("mode"))}
        for c in columns:
            r[md_escape(c)] = fmt(value_of(e, row, c)) if row in m["rows"] else ""
        if source:
            r["Source"] = md_escape(m.get("file") or (f"{m['questions']} questions" if m.get("questions") else ""))
        rows.append(r)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _mmad_section(board: Board, b: dict[str, Any]) -> list[str]:
    """An MMAD board: MMAD's columns (subtasks + Average, percent), one table per dataset row."""
    out = [f"## {md_escape(b['name'])}", ""]
    if b.get("manifest_sha256"):
        out += [f"mmad.json sha256 `{b['manifest_sha256']}`.", ""]
    out += ["Protocol `mmad-v1` (MMAD's multiple-choice questions): accuracy in percent per subtask; Anomaly "
            "Detection is the mean of the accuracy on normal and on anomalous images; `Average` is the mean of "
            "the subtask columns. Scoring `strict` counts an answer without a letter as wrong; "
            "`mmad-compatible` leaves it out, as MMAD's published tables do, so the two are not the same "
            "measurement. Not comparable with the MMR-AD boards.", ""]
    entries = board.benchmark_entries(b["key"])
    for row in b.get("datasets") or ["Average"]:
        with_row = [e for e in entries if row in e["mmad"]["rows"]]
        if not with_row:
            continue
        title = "Average over the source datasets" if row == "Average" else f"{row}"
        out += [f"### {md_escape(title)}", "", _mmad_table(with_row, row, b["columns"], source=row == "Average"), ""]
    if any(e["status"] == "reported" for e in entries):
        from mmrbench.mmad.reported import SOURCE_COMMIT, SOURCE_REPO
        out += [f"Published rows: the CSV named in `Source`, in github.com/{SOURCE_REPO} at commit `{SOURCE_COMMIT}` "
                "(values as printed there; shown to one decimal).", ""]
    return out


def render_markdown(board: Board) -> str:
    out = ["# MMR-AD leaderboard", "",
           "Protocol `mmr-ad-v1`: each cell is `det/loc` in percent (image-level detection / box-level "
           "localization at IoU >= 0.1), macro-averaged over the categories of each subdataset. "
           "One section per benchmark (the manifest an entry was scored on); numbers from different "
           "benchmarks are never put in one table. "
           "✅ verified = re-scored from the submitted predictions against the manifest named by sha256; "
           "📄 reported = the MMR-AD paper's Tables 4 and 5 as shipped with mmrbench, not re-scorable "
           f"(\"{NOT_REPORTED}\": the paper gives no localization for that model); "
           "⚠️ unverified = claimed numbers that could not be reproduced (reasons below). "
           "Charts (detection vs localization, recall vs precision, per-category intervals) are in `index.html`. "
           "MMAD boards (protocol `mmad-v1`, multiple-choice accuracy per subtask) have their own columns and "
           "are never mixed with MMR-AD numbers.", ""]
    if board.benchmarks:
        out += ["Benchmarks: " + ", ".join(md_escape(b["name"]) for b in board.benchmarks) + ".", ""]
    for b in board.benchmarks:
        out += _mmad_section(board, b) if b.get("kind") == "mmad" else _benchmark_section(board, b)
    unverified = [e for e in board.entries if e["status"] == "unverified"]
    if unverified:
        out += ["## Why entries are unverified", ""]
        for e in unverified:
            out.append(f"- **{md_escape(e['name'])}** (`{md_escape(e['id'])}`): "
                       + "; ".join(md_escape(r) for r in e["reasons"]))
        out.append("")
    if board.skipped:
        out += ["## Skipped files", ""] + [f"- {md_escape(s)}" for s in board.skipped] + [""]
    return "\n".join(out)
