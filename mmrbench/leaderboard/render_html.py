"""``index.html``: one self-contained static page (works from file://, no server, no network).

The board travels as JSON inside ``<script type="application/json">``; ``<``, ``>``, ``&`` and the
JavaScript line separators are written as ``\\uXXXX`` escapes, so no submitted string can close the
script element (``</script>``) or open markup. The page script (package data ``static/leaderboard.js``)
builds the DOM with ``textContent`` only, and a Content-Security-Policy allows exactly that script
(by hash), inline styles and ``data:`` images: even a markup injection could not run code or load
anything from the network.

Charts are inline SVG drawn by :mod:`mmrbench.leaderboard.charts` (static markup, every text escaped),
one section per benchmark, shown for the benchmark picked in the selector.

Images in the sample viewer are embedded as JPEG data URLs (thumbnails, at most 192 px on the long
side, the first N test samples of each run), so the page stays one portable file.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources
from typing import Any

from mmrbench.leaderboard.board import Board


def json_for_script(data: Any) -> str:
    """JSON safe to place inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    s = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _static(name: str) -> str:
    return resources.files("mmrbench.leaderboard").joinpath("static", name).read_text(encoding="utf-8")


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src '@@script_hash@@'">
<title>MMR-AD leaderboard</title>
<style>
@@css@@
</style>
</head>
<body>
<h1>MMR-AD leaderboard</h1>
<p class="intro">Protocol <code>mmr-ad-v1</code>. Each cell is <code>det/loc</code> in percent: image-level
anomaly detection / box-level localization (IoU &ge; 0.1), macro-averaged over the categories of a subdataset.
One board per benchmark (the manifest an entry was scored on): numbers from different benchmarks are never
compared. <b>verified</b>: re-scored from the submitted predictions against the manifest named by sha256;
<b>reported</b>: the MMR-AD paper's Tables 4 and 5, as shipped with mmrbench; <b>unverified</b>: claimed
numbers that could not be reproduced (reason shown). &ldquo;not reported&rdquo;: the paper gives no
localization for that model. Click a column header to sort (by the detection or localization part, see
&ldquo;sort by&rdquo;); hover a run's cell for its 95% bootstrap interval; &ldquo;view&rdquo; opens the sample viewer
(green: ground truth, red dashed: prediction). MMAD boards (protocol <code>mmad-v1</code>) show MMAD's own columns:
multiple-choice accuracy in percent per subtask; &ldquo;subdataset&rdquo; then picks the source dataset row.
@@generated@@</p>
<noscript><p>This page needs JavaScript for the tables; LEADERBOARD.md next to it has the same tables.</p></noscript>
<div class="controls">
<label>benchmark <select id="filter-bench"></select></label>
<label>subdataset <select id="filter-sub"></select></label>
<label>metric <select id="filter-metric"></select></label>
<label>sort by <select id="sort-part"></select></label>
<label>status <select id="filter-status"></select></label>
</div>
<h2 id="bench-title"></h2>
<table id="lb-table"></table>
<section id="ablations" hidden>
<h2>Anomaly-R1 ablations</h2>
<p class="intro">The paper's Table 5 (reported) with any verified run of the shipped ablation recipes
(<code>baselines/anomaly-r1/ablations/</code>, named in the run's <code>model.recipe</code>) beside its row.</p>
<table id="lb-ablation"></table>
</section>
<section id="viewer" hidden>
<h2 id="viewer-title"></h2>
<div class="legend"><span class="gt">&#9632; ground truth</span><span class="pred">&#9632; prediction</span></div>
<div id="sample-list"></div>
<div class="pair" id="sample-pair"></div>
<h3>Model response</h3>
<pre class="response" id="sample-response"></pre>
</section>
<div id="charts">
@@charts@@
</div>
<script type="application/json" id="lb-data">@@data@@</script>
<script>@@js@@</script>
</body>
</html>
"""


def charts_html(board: Board) -> str:
    """One ``<section class="bench-charts">`` per benchmark (the first shown), SVG drawn by the package."""
    from mmrbench.leaderboard.charts import benchmark_charts, esc, mmad_charts

    out = []
    for i, b in enumerate(board.benchmarks):
        body = mmad_charts(board, b) if b.get("kind") == "mmad" else benchmark_charts(board, b)
        out.append(f'<section class="bench-charts" data-benchmark="{esc(b["key"])}"{" hidden" if i else ""}>'
                   f'<h2>Charts: {esc(b["name"])}</h2>{body or "<p>No charts: no rows with numbers.</p>"}</section>')
    return "\n".join(out)


def render_html(board: Board, *, generated: str | None = None) -> str:
    js = _static("leaderboard.js")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    data = board.to_json()
    values = {
        "script_hash": f"sha256-{digest}", "css": _static("leaderboard.css"), "js": js,
        "data": json_for_script(data), "charts": charts_html(board),
        "generated": html.escape(f"Built {generated}." if generated else ""),
    }
    # one pass, so a substituted value is never scanned for placeholders again
    return re.sub(r"@@(\w+)@@", lambda m: values[m.group(1)], TEMPLATE)
