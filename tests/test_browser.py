"""The static page in a real headless Chromium (file://, no server): sort a column, open a sample,
check the drawn boxes, and check that hostile names and responses stay text.

Driven over the DevTools protocol (a websocket to the page target) with ``websockets``; no package
that downloads browsers. Skipped, with the reason shown, when Chromium is not installed
(``apt-get install chromium``; ``.ci/run`` does this).
"""
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lb_fixtures import make_benchmark, make_run, responses
from mmrbench.leaderboard.board import write_leaderboard
from mmrbench.leaderboard.reference import write_reference_entries

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
    out = tmp / "lb"
    write_leaderboard(results, out, manifest_stores=[tmp / "bench"], resamples=50, samples_per_run=24)

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


def test_page_renders_all_entries_without_errors(page):
    cdp, _ = page
    names = [n for n, _ in column(cdp, "VisA", "accuracy")]
    assert "Anomaly-R1-7B" in names and "good-model" in names and len(names) == 18
    errors = [e for e in cdp.events if e.get("method") == "Runtime.exceptionThrown"]
    assert errors == []
    assert cdp.js("document.querySelectorAll('tr.group').length") == 5


def test_sort_a_column(page):
    cdp, _ = page
    cdp.js("document.querySelector('th[data-sub=\"VisA\"][data-metric=\"accuracy\"]').click()")
    vals = [det(c) for _, c in column(cdp, "VisA", "accuracy")]
    present = [v for v in vals if v is not None]
    assert present == sorted(present, reverse=True) and vals[:len(present)] == present  # blanks last
    assert present[0] == 90.6  # HGAD
    assert cdp.js("document.querySelector('th.sorted-desc').textContent") == "VisA Acc"
    cdp.js("document.querySelector('th[data-sub=\"VisA\"][data-metric=\"accuracy\"]').click()")
    vals = [det(c) for _, c in column(cdp, "VisA", "accuracy") if c]
    assert vals == sorted(vals)
    # sort by the localization part instead
    cdp.js("var s = document.getElementById('sort-part'); s.value = 'loc'; s.dispatchEvent(new Event('change'));")
    cdp.js("document.querySelector('th[data-sub=\"MVTecAD\"][data-metric=\"accuracy\"]').click()")
    locs = [c.split("/")[1] for _, c in column(cdp, "MVTecAD", "accuracy") if c and not c.endswith("/-")]
    nums = [float(x) for x in locs]
    assert nums == sorted(nums, reverse=True) and nums[0] == 73.2


def test_filter_by_subdataset_and_metric(page):
    cdp, _ = page
    cdp.js("var s = document.getElementById('filter-sub'); s.value = 'MPDD'; s.dispatchEvent(new Event('change'));"
           "var m = document.getElementById('filter-metric'); m.value = 'recall'; m.dispatchEvent(new Event('change'));")
    heads = cdp.js("Array.from(document.querySelectorAll('#lb-table th.sortable')).map(function (t) { return t.textContent; })")
    assert heads == ["MPDD Recall"]
    cdp.js("var s = document.getElementById('filter-status'); s.value = 'verified'; s.dispatchEvent(new Event('change'));")
    assert sorted(n for n, _ in column(cdp, "MPDD", "recall")) == sorted(["good-model", EVIL_NAME])
    cdp.js("['filter-sub','filter-metric','filter-status'].forEach(function (id) { var s = document.getElementById(id);"
           " s.value = 'all'; s.dispatchEvent(new Event('change')); });")


def test_sample_viewer_draws_the_boxes(page):
    cdp, samples = page
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
    assert not [e for e in cdp.events if e.get("method") == "Page.javascriptDialogOpening"]
