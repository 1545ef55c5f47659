"""The static page in a real headless Chromium (file://, no server): switch benchmarks, count chart
marks against table rows, sort a column, open a sample, check the drawn boxes, check that hostile names
and responses stay text, and that a screenshot shows something.

Driven over the DevTools protocol (a websocket to the page target) with ``websockets``; no package
that downloads browsers. Skipped, with the reason shown, when Chromium is not installed
(``apt-get install chromium``; ``.ci/run`` does this).
"""
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lb_fixtures import make_benchmark, make_run, responses
from mmrbench.leaderboard.write import write_leaderboard
from mmrbench.leaderboard.reference import write_reference_entries
from mmrbench.cards import ModelCard
from mmrbench.leaderboard.mmad import write_mmad_reported_entries
from mmrbench.leaderboard.submit import submit_run
from mmrbench.mmad.reported import load_reported
from mmrbench.mmad.run import evaluate_mmad
from test_mmad_data import write_release

pytestmark = pytest.mark.browser

CHROME = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                           shutil.which("google-chrome")) if p), None)
EVIL_NAME = '<img src=x onerror="window.__pwned=1">"><script>window.__pwned=2</script>'
EVIL_TEXT = '</script><script>window.__pwned=3</script>"><img onerror="window.__pwned=4" src=x>'


class CDP:
    """Minimal DevTools-protocol client: numbered commands, events buffered."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    def call(self, method, timeout=20, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"page JS failed: {r['exceptionDetails']}")
        return r["result"].get("value")



def open_ws(url):
    """Websocket to the page target; never through an HTTP proxy from the environment."""
    import inspect

    from websockets.sync.client import connect

    kw = {"max_size": None, "open_timeout": 20}
    if "proxy" in inspect.signature(connect).parameters:
        kw["proxy"] = None
    return connect(url, **kw)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if CHROME is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium): browser test skipped")
    tmp = tmp_path_factory.mktemp("browser")
    man, samples = make_benchmark(tmp / "bench")
    texts = responses(samples, 2)
    texts = {k: v.replace("I compare", EVIL_TEXT + " I compare") for k, v in texts.items()}
    results = tmp / "results"
    make_run(results / "evil", man, samples, name=EVIL_NAME, texts=texts)
    make_run(results / "good", man, samples, name="good-model", skill=3)
    write_reference_entries(results)
    write_mmad_reported_entries(results)  # MMAD's published rows, and a chance-level run declared as MMAD
    release = write_release(tmp / "mmadstore" / "MMAD")
    (release / "mmad-info.json").write_text(json.dumps({"benchmark": "MMAD"}))
    evaluate_mmad(ModelCard(name="chance-level", provider="chance", model_id="seed-0", display_name=EVIL_NAME),
                  release, tmp / "mmadrun")
    submit_run(tmp / "mmadrun", results_dir=results, manifest=release)
    out = tmp / "lb"
    write_leaderboard(results, out, manifest_stores=[tmp / "bench", tmp / "mmadstore"], resamples=50,
                      samples_per_run=24)

    profile = tmp / "profile"
    proc = subprocess.Popen(
        [CHROME, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                pytest.skip(f"Chromium did not start (exit code {proc.poll()}): browser test skipped")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.loads(no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        with open_ws(url) as ws:
            cdp = CDP(ws)
            cdp.call("Runtime.enable")
            cdp.call("Page.enable")
            cdp.call("Page.navigate", url=(out / "index.html").resolve().as_uri())
            deadline = time.time() + 30
            while cdp.js("document.body && document.body.getAttribute('data-ready')") != "1":
                assert time.time() < deadline, "page script did not finish"
                time.sleep(0.1)
            yield cdp, samples
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def column(cdp, sub, metric):
    return cdp.js(f"""Array.from(document.querySelectorAll('#lb-table tr.entry')).map(function (tr) {{
        var td = tr.querySelector('td.cell[data-sub="{sub}"][data-metric="{metric}"]');
        return [tr.querySelector('.name').textContent, td ? td.textContent : null]; }})""")


def det(cell):
    return None if not cell else float(cell.split("/")[0])


def pick(cdp, select_id, value):
    cdp.js(f"var s = document.getElementById('{select_id}'); s.value = {json.dumps(value)};"
           " s.dispatchEvent(new Event('change'));")


def benchmarks(cdp):
    return cdp.js("Array.from(document.querySelectorAll('#filter-bench option')).map(function (o) {"
                  " return [o.value, o.textContent]; })")


def tiny_key(cdp):
    return next(k for k, name in benchmarks(cdp) if name.startswith("tiny"))


def test_page_renders_the_paper_board_first_without_errors(page):
    cdp, _ = page
    assert [n for _, n in benchmarks(cdp)][:2] == ["MMR-AD test (paper)", "MMAD (published)"]
    assert len(benchmarks(cdp)) == 3
    names = [n for n, _ in column(cdp, "VisA", "accuracy")]
    assert "Anomaly-R1-7B" in names and "Anomaly-R1-7B\u2020" in names and len(names) == 21
    assert "good-model" not in names  # runs on another benchmark are never in the paper's table
    errors = [e for e in cdp.events if e.get("method") == "Runtime.exceptionThrown"]
    assert errors == []
    assert cdp.js("document.querySelectorAll('#lb-table tr.group').length") == 4
    assert cdp.js("document.getElementById('ablations').hidden") is False
    assert cdp.js("document.querySelectorAll('#lb-ablation tr.entry').length") == 7
    heads = cdp.js("Array.from(document.querySelectorAll('#lb-ablation th.sortable')).map(function (t) { return t.textContent; })")
    assert heads[0] == "MVTecAD Acc" and heads[-1] == "VisA Precision" and len(heads) == 6
    agpt = cdp.js("""Array.from(document.querySelectorAll('#lb-table tr.entry')).filter(function (tr) {
        return tr.querySelector('.name').textContent === 'AnomalyGPT-7B'; })[0]
        .querySelector('td.cell[data-sub="MPDD"][data-metric="accuracy"]').textContent""")
    assert agpt == "67.6/not reported"


def chart_counts(cdp):
    """[(chart kind, subdataset, marks in its SVG, table rows with a value in that subdataset)] for the
    charts of the benchmark on show."""
    return cdp.js("""(function () {
        var sec = Array.from(document.querySelectorAll('section.bench-charts')).filter(function (s) { return !s.hidden; });
        if (sec.length !== 1) { return 'visible chart sections: ' + sec.length; }
        var rows = Array.from(document.querySelectorAll('#lb-table tr.entry'));
        return Array.from(sec[0].querySelectorAll('svg.chart[data-sub]')).map(function (svg) {
          var sub = svg.getAttribute('data-sub');
          var n = rows.filter(function (tr) {
            var td = tr.querySelector('td.cell[data-sub="' + sub + '"][data-metric="accuracy"]');
            return td && td.textContent !== ''; }).length;
          var box = svg.getBoundingClientRect();
          return [svg.getAttribute('data-chart'), sub, svg.querySelectorAll('g.mark').length, n, box.width > 100];
        }); })()""")


def screenshot_not_blank(cdp, name):
    import base64
    import io
    from PIL import Image, ImageStat

    png = base64.b64decode(cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
    im = Image.open(io.BytesIO(png)).convert("L")
    if os.environ.get("MMRBENCH_SCREENSHOTS"):  # a folder to keep the screenshots in, for a human look
        Image.open(io.BytesIO(png)).save(Path(os.environ["MMRBENCH_SCREENSHOTS"]) / name)
    stat = ImageStat.Stat(im)
    assert im.size[0] > 300 and im.size[1] > 300
    assert stat.stddev[0] > 10, "screenshot is blank"  # text, tables and charts give contrast
    return im


def test_switching_benchmarks_shows_each_board_and_its_charts(page):
    cdp, _ = page
    counts = chart_counts(cdp)
    assert isinstance(counts, list) and len(counts) == 8  # det-loc and recall-precision x 4 subdatasets
    for kind, sub, marks, rows, visible in counts:
        assert marks == rows == 21 and visible, (kind, sub, marks, rows)
    screenshot_not_blank(cdp, "paper.png")
    pick(cdp, "filter-bench", tiny_key(cdp))
    names = sorted(n for n, _ in column(cdp, "VisA", "accuracy"))
    assert names == sorted(["good-model", EVIL_NAME])
    assert cdp.js("document.getElementById('ablations').hidden") is True
    heads = cdp.js("Array.from(document.querySelectorAll('#lb-table th.sortable')).map(function (t) { return t.textContent; })")
    assert {h.split()[0] for h in heads} == {"MVTecAD", "VisA"}  # the paper's other columns are gone
    counts = chart_counts(cdp)
    assert len(counts) == 4
    for kind, sub, marks, rows, visible in counts:
        assert marks == rows == 2 and visible, (kind, sub, marks, rows)
    bars = cdp.js("""Array.from(document.querySelectorAll('section.bench-charts:not([hidden]) svg[data-chart="categories"]'))
        .map(function (svg) { return svg.querySelectorAll('g.mark').length; })""")
    assert bars == [3, 3]  # one bar group per category for each run
    screenshot_not_blank(cdp, "tiny.png")
    assert cdp.js("typeof window.__pwned") == "undefined"
    pick(cdp, "filter-bench", "mmr-ad-paper")
    assert len(column(cdp, "VisA", "accuracy")) == 21


def test_sort_a_column(page):
    cdp, _ = page
    pick(cdp, "filter-bench", "mmr-ad-paper")
    cdp.js("document.querySelector('#lb-table th[data-sub=\"VisA\"][data-metric=\"accuracy\"]').click()")
    vals = [det(c) for _, c in column(cdp, "VisA", "accuracy")]
    present = [v for v in vals if v is not None]
    assert present == sorted(present, reverse=True) and vals[:len(present)] == present  # blanks last
    assert present[0] == 90.6  # HGAD
    assert cdp.js("document.querySelector('#lb-table th.sorted-desc').textContent") == "VisA Acc"
    cdp.js("document.querySelector('#lb-table th[data-sub=\"VisA\"][data-metric=\"accuracy\"]').click()")
    vals = [det(c) for _, c in column(cdp, "VisA", "accuracy") if c]
    assert vals == sorted(vals)
    # sort by the localization part instead
    pick(cdp, "sort-part", "loc")
    cdp.js("document.querySelector('#lb-table th[data-sub=\"MVTecAD\"][data-metric=\"accuracy\"]').click()")
    locs = [c.split("/")[1] for _, c in column(cdp, "MVTecAD", "accuracy") if c and c[-1].isdigit()]
    nums = [float(x) for x in locs]
    assert nums == sorted(nums, reverse=True) and nums[0] == 73.2
    pick(cdp, "sort-part", "det")


def test_filter_by_subdataset_and_metric(page):
    cdp, _ = page
    pick(cdp, "filter-bench", tiny_key(cdp))
    pick(cdp, "filter-sub", "VisA")
    pick(cdp, "filter-metric", "recall")
    heads = cdp.js("Array.from(document.querySelectorAll('#lb-table th.sortable')).map(function (t) { return t.textContent; })")
    assert heads == ["VisA Recall"]
    pick(cdp, "filter-status", "verified")
    assert sorted(n for n, _ in column(cdp, "VisA", "recall")) == sorted(["good-model", EVIL_NAME])
    pick(cdp, "filter-status", "reported")
    assert column(cdp, "VisA", "recall") == []
    for sel in ("filter-sub", "filter-metric", "filter-status"):
        pick(cdp, sel, "all")


def test_sample_viewer_draws_the_boxes(page):
    cdp, samples = page
    pick(cdp, "filter-bench", tiny_key(cdp))
    idx = cdp.js("""(function () { var rows = Array.from(document.querySelectorAll('#lb-table tr.entry'));
        var tr = rows.filter(function (r) { return r.querySelector('.name').textContent === 'good-model'; })[0];
        tr.querySelector('button.view-samples').click();
        return document.getElementById('viewer').hidden; })()""")
    assert idx is False
    n_links = cdp.js("document.querySelectorAll('#sample-list button.sample-link').length")
    assert n_links == len(samples)  # 20 test samples < 24 per run
    target = next(s for s in samples if len(s.boxes) == 2)  # a two-defect image
    cdp.js(f"document.querySelector('#sample-list button[data-sample=\"{target.id}\"]').click()")
    rects = cdp.js("""Array.from(document.querySelectorAll('#query-svg rect')).map(function (r) {
        return [r.getAttribute('class'), +r.getAttribute('x'), +r.getAttribute('y'),
                +r.getAttribute('width'), +r.getAttribute('height')]; })""")
    gt = [[b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1] for b in target.boxes]
    assert [r[1:] for r in rects if r[0] == "gt-box"] == gt
    expected_pred = responses(samples, 3)[target.id]
    n_pred = expected_pred.count("bbox_2d")
    assert len([r for r in rects if r[0] == "pred-box"]) == n_pred
    if n_pred:
        assert [r[1:] for r in rects if r[0] == "pred-box"] == gt  # this model answers with the gt boxes
    # boxes are drawn in the query's pixel frame over the embedded thumbnail
    assert cdp.js("document.getElementById('query-svg').getAttribute('viewBox')") == f"0 0 {target.width} {target.height}"
    assert cdp.js("document.querySelector('#query-svg image').getAttribute('href').slice(0, 15)") == "data:image/jpeg"
    # rendered geometry: the second gt box sits in the lower right of the drawn image
    geo = cdp.js("""(function () { var svg = document.getElementById('query-svg').getBoundingClientRect();
        var r = document.querySelectorAll('#query-svg rect.gt-box')[1].getBoundingClientRect();
        return [(r.left - svg.left) / svg.width, (r.top - svg.top) / svg.height]; })()""")
    assert abs(geo[0] - target.boxes[1].x1 / target.width) < 0.03 and abs(geo[1] - target.boxes[1].y1 / target.height) < 0.03
    assert "I compare" in cdp.js("document.getElementById('sample-response').textContent")


def test_hostile_name_and_response_stay_text(page):
    cdp, samples = page
    pick(cdp, "filter-bench", tiny_key(cdp))
    assert EVIL_NAME in [n for n, _ in column(cdp, "VisA", "accuracy")]
    cdp.js("""(function () { var rows = Array.from(document.querySelectorAll('#lb-table tr.entry'));
        rows.filter(function (r) { return r.querySelector('.name').textContent.indexOf('__pwned') >= 0; })[0]
            .querySelector('button.view-samples').click(); })()""")
    assert cdp.js("document.getElementById('sample-response').textContent").startswith("<think>" + EVIL_TEXT)
    assert cdp.js("document.getElementById('sample-response').children.length") == 0
    assert cdp.js("typeof window.__pwned") == "undefined"
    # the only images are our data-URL thumbnails; no script elements beyond the page's two
    srcs = cdp.js("Array.from(document.querySelectorAll('img')).map(function (i) { return i.getAttribute('src').slice(0, 11); })")
    assert set(srcs) <= {"data:image/"}
    assert cdp.js("document.querySelectorAll('script').length") == 2
    # the charts' SVG hold no script, link or handler; the hostile name is a text node in a <title>
    assert cdp.js("document.querySelectorAll('svg script, svg a, svg foreignObject, svg [onload], svg [onclick]').length") == 0
    assert cdp.js("Array.from(document.querySelectorAll('svg.chart title')).some(function (t) {"
                  " return t.textContent.indexOf('window.__pwned=2') >= 0 && t.children.length === 0; })")
    assert not [e for e in cdp.events if e.get("method") == "Page.javascriptDialogOpening"]


def mmad_table(cdp):
    return cdp.js("""Array.from(document.querySelectorAll('#lb-table tr.entry')).map(function (tr) {
        return [tr.querySelector('.name').textContent].concat(Array.from(tr.querySelectorAll('td.cell')).map(
          function (td) { return td.textContent; })); })""")


def test_switching_to_the_mmad_board(page):
    cdp, _ = page
    pick(cdp, "filter-bench", "mmad-published")
    heads = cdp.js("Array.from(document.querySelectorAll('#lb-table th.sortable')).map(function (t) { return t.textContent; })")
    assert heads == ["Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
                     "Defect Analysis", "Object Classification", "Object Analysis", "Average"]
    shipped = load_reported()
    rows = mmad_table(cdp)
    assert len(rows) == 23  # MMAD's 22 published tables and the chance level
    assert [r[0] for r in rows[:22]] == [r.model + (f" ({r.note})" if r.note else "") for r in shipped]
    for got, r in zip(rows, shipped):  # the Average row of every published table, to one decimal
        assert got[1:] == [f"{r.rows['Average'][h]:.1f}" for h in heads]
    assert rows[22][0] == EVIL_NAME  # a hostile display name stays text
    assert cdp.js("document.getElementById('ablations').hidden") is True
    assert cdp.js("document.querySelectorAll('#lb-table tr.group').length") == 2  # published, chance level
    # charts: one bar per model row with a value in every subtask panel, nothing from MMR-AD
    counts = chart_counts_mmad(cdp)
    assert len(counts) == 8
    for col, marks, visible in counts:
        n = len([r for r in rows if r[1 + heads.index(col)] not in ("", "\u2013")])
        assert marks == n and visible, (col, marks, n)
    screenshot_not_blank(cdp, "mmad.png")
    # the dataset row: VisA
    pick(cdp, "filter-sub", "VisA")
    gpt = next(r for r in mmad_table(cdp) if r[0] == "gpt-4o")
    ref = next(r for r in shipped if r.model == "gpt-4o")
    assert gpt[1:] == [f"{ref.rows['VisA'][h]:.1f}" for h in heads]
    # sort by Defect Localization, descending
    cdp.js("document.querySelector('#lb-table th[data-metric=\"Defect Localization\"]').click()")
    vals = [float(r[3]) for r in mmad_table(cdp) if r[3] not in ("", "\u2013")]
    assert vals == sorted(vals, reverse=True) and len(vals) == 23
    assert cdp.js("typeof window.__pwned") == "undefined"
    pick(cdp, "filter-sub", "all")
    pick(cdp, "filter-bench", "mmr-ad-paper")
    assert len(column(cdp, "VisA", "accuracy")) == 21 and cdp.js("document.getElementById('filter-metric').disabled") is False


def chart_counts_mmad(cdp):
    return cdp.js("""(function () {
        var sec = Array.from(document.querySelectorAll('section.bench-charts')).filter(function (s) { return !s.hidden; });
        if (sec.length !== 1) { return 'visible chart sections: ' + sec.length; }
        return Array.from(sec[0].querySelectorAll('svg.chart[data-chart="mmad-subtask"]')).map(function (svg) {
          return [svg.getAttribute('data-sub'), svg.querySelectorAll('g.mark').length,
                  svg.getBoundingClientRect().width > 100]; }); })()""")
