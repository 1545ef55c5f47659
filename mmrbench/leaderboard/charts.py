"""Charts as inline SVG, drawn by the package: no plotting library, no CDN, no script, no network.

Per benchmark (one small panel per subdataset):

* **detection vs localization accuracy**: one mark per model row; where will a model that answers
  "Yes" well still fail to point at the defect;
* **recall vs precision** (detection): one mark per model row; models far right with precision near
  the anomaly share answer "Yes" to nearly everything (the paper names QVQ-Max and Gemma3-27B).

Per run with statistics: **per-category accuracy bars** (detection and localization) with their 95 %
bootstrap intervals.

Marks are told apart by status: reported (hollow circle), verified (filled circle), unverified
(hollow square). A model without reported localization sits on a strip under the axis labelled "loc
not reported", never at 0. Every mark carries ``class="mark"`` and ``data-entry`` (the entry's id) and a
``<title>`` with the model and its numbers (hover), and a number that the legend below the charts
resolves to the model name. Every text is escaped here; the page's CSP allows no script in SVG anyway.
"""
from __future__ import annotations

import html
from typing import Any

W, H = 280, 250
ML, MR, MT, MB = 40, 12, 26, 52  # margins: left, right, top, bottom (bottom holds the "not reported" strip)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float | None) -> str:
    return "n.r." if v is None else f"{100 * v:.1f}"


def _domain(values: list[float]) -> tuple[float, float]:
    """Axis range in percent: from 0, 20, 60 or 80 (the highest below the smallest value, with a margin)
    to 100, so the four tick steps are round (25, 20, 10, 5)."""
    lo = min(values, default=0.0) * 100 - 3
    return max([b for b in (0.0, 20.0, 60.0, 80.0) if b <= lo], default=0.0), 100.0


def _axes(out: list[str], x0: float, x1: float, y0: float, y1: float, xlabel: str, ylabel: str, title: str) -> None:
    pw, ph = W - ML - MR, H - MT - MB
    out.append(f'<text class="panel-title" x="{ML + pw / 2:.1f}" y="14" text-anchor="middle">{esc(title)}</text>')
    out.append(f'<rect class="plot" x="{ML}" y="{MT}" width="{pw}" height="{ph}"/>')
    for k in range(5):
        fx = x0 + (x1 - x0) * k / 4
        fy = y0 + (y1 - y0) * k / 4
        px = ML + pw * k / 4
        py = MT + ph - ph * k / 4
        out.append(f'<line class="grid" x1="{px:.1f}" y1="{MT}" x2="{px:.1f}" y2="{MT + ph}"/>')
        out.append(f'<line class="grid" x1="{ML}" y1="{py:.1f}" x2="{ML + pw}" y2="{py:.1f}"/>')
        out.append(f'<text class="tick" x="{px:.1f}" y="{MT + ph + 11}" text-anchor="middle">{fx:.0f}</text>')
        out.append(f'<text class="tick" x="{ML - 4}" y="{py + 3:.1f}" text-anchor="end">{fy:.0f}</text>')
    out.append(f'<text class="axis-label" x="{ML + pw / 2:.1f}" y="{MT + ph + 23}" text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text class="axis-label" transform="translate(10 {MT + ph / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{esc(ylabel)}</text>')


def _mark(out: list[str], cx: float, cy: float, e: dict, number: int, tip: str) -> None:
    status = e["status"] if e["status"] in ("verified", "reported") else "unverified"
    attrs = f'class="mark mark-{status}" data-entry="{esc(e["id"])}" data-number="{number}"'
    if status == "unverified":
        out.append(f'<g {attrs}><rect x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8"/>'
                   f'<title>{esc(tip)}</title></g>')
    else:
        out.append(f'<g {attrs}><circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.2"/><title>{esc(tip)}</title></g>')
    out.append(f'<text class="mark-label" x="{cx + 5:.1f}" y="{cy - 4:.1f}">{number}</text>')


def scatter_panel(bench_key: str, kind: str, sub: str, rows: list[tuple[int, dict]]) -> str:
    """One panel: ``kind`` "det-loc" (x det accuracy, y loc accuracy) or "recall-precision" (detection)."""
    if kind == "det-loc":
        get = lambda e: ((e["cells"].get(sub) or {}).get("accuracy") or {})  # noqa: E731
        xs = lambda c: c.get("det")  # noqa: E731
        ys = lambda c: c.get("loc")  # noqa: E731
        xlabel, ylabel = "detection accuracy %", "localization accuracy %"
    else:
        get = lambda e: {"det": ((e["cells"].get(sub) or {}).get("recall") or {}).get("det"),  # noqa: E731
                         "loc": ((e["cells"].get(sub) or {}).get("precision") or {}).get("det")}
        xs = lambda c: c.get("det")  # noqa: E731
        ys = lambda c: c.get("loc")  # noqa: E731
        xlabel, ylabel = "detection recall %", "detection precision %"
    points = [(n, e, xs(get(e)), ys(get(e))) for n, e in rows if xs(get(e)) is not None]
    x0, x1 = _domain([p[2] for p in points])
    y0, y1 = _domain([p[3] for p in points if p[3] is not None])
    pw, ph = W - ML - MR, H - MT - MB
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
           f'role="img" data-chart="{kind}" data-benchmark="{esc(bench_key)}" data-sub="{esc(sub)}" '
           f'data-marks="{len(points)}">']
    out.append(f'<title>{esc(sub)}: {esc(xlabel)} vs {esc(ylabel)}</title>')
    _axes(out, x0, x1, y0, y1, xlabel, ylabel, sub)
    if kind == "recall-precision" and x0 < 95:
        px = ML + pw * (95 - x0) / (x1 - x0)
        out.append(f'<rect class="yes-zone" x="{px:.1f}" y="{MT}" width="{ML + pw - px:.1f}" height="{ph}">'
                   '<title>recall of 95 % or more: answers "Yes" to nearly every image</title></rect>')
    if any(p[3] is None for p in points):
        out.append(f'<text class="nr-label" x="{ML}" y="{H - 4}">loc not reported \u2192</text>')
    for n, e, xv, yv in points:
        cx = ML + pw * (100 * xv - x0) / (x1 - x0)
        cy = (H - 8) if yv is None else MT + ph - ph * (100 * yv - y0) / (y1 - y0)
        if yv is None:
            cx = max(cx, ML + 100)
        tip = f"{e['name']} ({e['status']}): {xlabel} {_fmt(xv)}, {ylabel} {_fmt(yv)}"
        if yv is None and kind == "det-loc":
            tip = f"{e['name']} ({e['status']}): {xlabel} {_fmt(xv)}, localization not reported"
        _mark(out, cx, cy, e, n, tip)
    out.append("</svg>")
    return "".join(out)


def category_bars(entry: dict[str, Any]) -> str:
    """Per-category detection and localization accuracy of one run, with 95 % intervals."""
    cats = entry.get("categories") or []
    row_h, label_w, bar_w = 30, 170, 300
    width, height = label_w + bar_w + 60, 34 + row_h * len(cats)
    out = [f'<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" data-chart="categories" data-entry="{esc(entry["id"])}" '
           f'data-marks="{len(cats)}">',
           f'<title>{esc(entry["name"])}: accuracy per category with 95 % bootstrap intervals</title>']
    for k in range(5):
        x = label_w + bar_w * k / 4
        out.append(f'<line class="grid" x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height - 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="12" text-anchor="middle">{25 * k}</text>')
    for i, c in enumerate(cats):
        y = 22 + i * row_h
        out.append(f'<text class="cat-label" x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
                   f'{esc(c["subdataset"])} / {esc(c["category"])}</text>')
        out.append(f'<g class="mark cat" data-category="{esc(c["subdataset"])}/{esc(c["category"])}">')
        for j, part in enumerate(("det", "loc")):
            ci = c[f"{part}_accuracy"]
            yy = y + 2 + 12 * j
            out.append(f'<rect class="bar bar-{part}" x="{label_w}" y="{yy}" width="{bar_w * ci["value"]:.1f}" '
                       f'height="10"><title>{"detection" if part == "det" else "localization"} accuracy '
                       f'{_fmt(ci["value"])} % [95 % CI {_fmt(ci["low"])}, {_fmt(ci["high"])}]</title></rect>')
            lo, hi = label_w + bar_w * ci["low"], label_w + bar_w * ci["high"]
            out.append(f'<line class="ci" x1="{lo:.1f}" y1="{yy + 5}" x2="{hi:.1f}" y2="{yy + 5}"/>'
                       f'<line class="ci" x1="{lo:.1f}" y1="{yy + 1}" x2="{lo:.1f}" y2="{yy + 9}"/>'
                       f'<line class="ci" x1="{hi:.1f}" y1="{yy + 1}" x2="{hi:.1f}" y2="{yy + 9}"/>')
            out.append(f'<text class="bar-value" x="{label_w + bar_w + 4}" y="{yy + 9}">{_fmt(ci["value"])}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def chart_rows(board, bench_key: str) -> list[tuple[int, dict]]:
    """The model rows the scatter charts show (the benchmark's main table), numbered from 1."""
    return list(enumerate(board.benchmark_entries(bench_key, "main"), start=1))


def benchmark_charts(board, bench: dict[str, Any]) -> str:
    """Every chart of one benchmark, with its legend, as HTML (figures of inline SVG)."""
    rows = chart_rows(board, bench["key"])
    parts = []
    if rows:
        for kind, caption in (("det-loc", "Detection vs localization accuracy (IoU \u2265 0.1), per subdataset"),
                              ("recall-precision", "Detection recall vs precision, per subdataset: far right "
                               "(shaded: recall \u2265 95 %) with low precision = answers \u201cYes\u201d to "
                               "nearly everything")):
            panels = "".join(scatter_panel(bench["key"], kind, sub, rows) for sub in bench["subdatasets"])
            parts.append(f'<figure class="charts" data-chart="{kind}"><figcaption>{esc(caption)}. '
                         'Filled: verified; hollow circle: reported (paper); square: unverified.</figcaption>'
                         f'<div class="panels">{panels}</div></figure>')
        legend = "".join(f'<li value="{n}" data-entry="{esc(e["id"])}"><span class="badge badge-'
                         f'{e["status"] if e["status"] in ("verified", "reported") else "unverified"}">'
                         f'{esc(e["status"])}</span> {esc(e["name"])}'
                         f'{"" if e["variant"] == "default" else " [" + esc(e["variant"]) + "]"}</li>'
                         for n, e in rows)
        parts.append(f'<ol class="chart-legend">{legend}</ol>')
    runs = [e for e in board.benchmark_entries(bench["key"]) if e.get("categories")]
    for e in runs:
        parts.append(f'<figure class="charts run-bars" data-entry="{esc(e["id"])}"><figcaption>{esc(e["name"])}'
                     f'{"" if e["variant"] == "default" else " [" + esc(e["variant"]) + "]"} ({esc(e["status"])}): '
                     'accuracy per category, detection (dark) and localization (light), with 95 % bootstrap '
                     f'intervals ({int((e.get("ci") or {}).get("resamples") or 0)} resamples)</figcaption>'
                     f'{category_bars(e)}</figure>')
    return "".join(parts)


def mmad_bars(bench_key: str, column: str, rows: list[tuple[int, dict]], row: str = "Average") -> str:
    """One MMAD panel: ``column`` (a subtask or Average) of dataset row ``row``, one horizontal bar per
    model row of the board that has a value, numbered like the legend; scale 0-100 %."""
    from mmrbench.leaderboard.mmad import value_of

    points: list[tuple[Any, Any, float]] = []
    for n, e in rows:
        v = value_of(e, row, column)
        if v is not None:
            points.append((n, e, v))
    label_w, bar_w, row_h = 28, 230, 14
    width, height = label_w + bar_w + 44, 40 + row_h * max(1, len(points))
    out = [f'<svg class="chart bars mmad" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" data-chart="mmad-subtask" data-benchmark="{esc(bench_key)}" '
           f'data-sub="{esc(column)}" data-row="{esc(row)}" data-marks="{len(points)}">',
           f'<title>{esc(column)} ({esc(row)} row), accuracy % per model</title>',
           f'<text class="panel-title" x="{width / 2:.1f}" y="12" text-anchor="middle">{esc(column)}</text>']
    for k in range(5):
        x = label_w + bar_w * k / 4
        out.append(f'<line class="grid" x1="{x:.1f}" y1="24" x2="{x:.1f}" y2="{height - 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="22" text-anchor="middle">{25 * k}</text>')
    for i, (n, e, v) in enumerate(points):
        y = 28 + i * row_h
        status = e["status"] if e["status"] in ("verified", "reported") else "unverified"
        tip = f"{e['name']} ({e['status']}, {e.get('detail') or ''}): {column} {v:.1f} %"
        out.append(f'<g class="mark mark-{status}" data-entry="{esc(e["id"])}" data-number="{n}">'
                   f'<text class="mark-label" x="{label_w - 4}" y="{y + 9}" text-anchor="end">{n}</text>'
                   f'<rect class="bar bar-det" x="{label_w}" y="{y}" width="{bar_w * min(100.0, v) / 100:.1f}" '
                   f'height="{row_h - 3}"><title>{esc(tip)}</title></rect>'
                   f'<text class="bar-value" x="{label_w + bar_w + 4}" y="{y + 9}">{v:.1f}</text></g>')
    out.append("</svg>")
    return "".join(out)


def mmad_charts(board, bench: dict[str, Any]) -> str:
    """An MMAD board's charts: one bar panel per subtask column (and Average), the Average row of
    every model row (one bar per row), with the numbered legend."""
    rows = chart_rows(board, bench["key"])
    if not rows:
        return ""
    panels = "".join(mmad_bars(bench["key"], col, rows) for col in bench.get("columns") or [])
    legend = "".join(f'<li value="{n}" data-entry="{esc(e["id"])}"><span class="badge badge-'
                     f'{e["status"] if e["status"] in ("verified", "reported") else "unverified"}">'
                     f'{esc(e["status"])}</span> {esc(e["name"])} <span class="kind">{esc(e.get("detail") or "")}</span></li>'
                     for n, e in rows)
    return (f'<figure class="charts" data-chart="mmad-subtask"><figcaption>Accuracy per subtask (%), average over '
            'the source datasets, one bar per model row. Published rows were scored mmad-compatible (answers '
            'without a letter left out), runs in the mode they name.</figcaption>'
            f'<div class="panels">{panels}</div></figure><ol class="chart-legend">{legend}</ol>')
