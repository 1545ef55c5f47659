"""LEADERBOARD.md and index.html: Table-4 layout, badges, CIs, and hostile names rendered as text."""
import json
import re
from html.parser import HTMLParser

import pytest

from lb_fixtures import make_benchmark, make_run, responses
from mmrbench.cli import main
from mmrbench.leaderboard.board import build_board
from mmrbench.leaderboard.render_html import json_for_script, render_html
from mmrbench.leaderboard.render_md import md_escape, render_markdown
from mmrbench.leaderboard.reference import write_reference_entries

EVIL_NAME = '<script>alert(1)</script>"><img src=x onerror=alert(2)>[x](javascript:alert(3))|'
EVIL_TEXT = '</script><script>alert(4)</script>"><img onerror=alert(5) src=x><!-- \u2028'


@pytest.fixture()
def board_dir(tmp_path):
    man, samples = make_benchmark(tmp_path / "bench")
    texts = responses(samples, 2)
    texts = {k: v.replace("I compare", EVIL_TEXT + " I compare") for k, v in texts.items()}
    results = tmp_path / "results"
    make_run(results / "evil", man, samples, name=EVIL_NAME, texts=texts)
    make_run(results / "plain", man, samples, name="plain-model", skill=3)
    write_reference_entries(results)
    return tmp_path, results


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = dict(attrs).get("type", "js")
            self.scripts.append([self._in, ""])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.scripts[-1][1] += data


def test_markdown_layout_and_escaping(board_dir):
    tmp, results = board_dir
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=100)
    md = render_markdown(board)
    # one section per benchmark: the paper's board first, then the runs' own benchmark
    paper, tiny = md.index("## MMR-AD test (paper)"), md.index("## tiny (manifest ")
    assert paper < tiny
    # groups in Table-4 order on the paper's board, the runs only on theirs
    order = [md.index(h) for h in ("### Commercial MLLMs", "### Open-source MLLMs", "### Full-shot anomaly detectors",
                                   "### Anomaly-R1 (the paper's model)", "### Anomaly-R1 ablations")]
    assert order == sorted(order) and paper < order[0] and order[-1] < tiny
    assert md.index("### Submitted runs") > tiny and md.index("plain-model") > tiny
    assert "| Anomaly-R1-7B | 📄 reported | 88.8/66.3" in md.replace("  ", " ").replace("  ", " ").replace("  ", " ")
    assert "85.7/not reported" in md and "85.7/-" not in md  # AnomalyGPT: no localization reported, never 0
    assert "✅ verified" in md and "## 95% bootstrap confidence intervals" in md
    assert "<script" not in md and "<img" not in md and "[x](javascript" not in md
    assert "\\[x\\](javascript" in md  # brackets escaped: no link
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    # the pipe in the name cannot break the table: every row has as many cells as its table's header
    header_cells = None
    for line in md.splitlines():
        if not line.startswith("|"):
            header_cells = None
            continue
        cells = line.replace("\\|", "").count("|")
        if header_cells is None:
            header_cells = cells
        assert cells == header_cells, line
    # the paper's rows are shown on the paper's four subdatasets only (no empty columns of other benchmarks)
    paper_header = next(line for line in md.splitlines() if line.startswith("| Model") and "MVTecAD Acc" in line)
    assert paper_header.replace("\\|", "").count("|") == 15  # model, status + 4 x 3 cells


def test_md_escape_units():
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("<b>x</b> & *y*") == "&lt;b&gt;x&lt;/b&gt; &amp; \\*y\\*"
    assert md_escape("line\nbreak") == "line break"


def test_json_for_script_cannot_close_the_element():
    s = json_for_script({"a": "</script><!-- & \u2028"})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s
    assert json.loads(s) == {"a": "</script><!-- & \u2028"}


def test_html_has_no_injected_markup(board_dir):
    tmp, results = board_dir
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=100)
    page = render_html(board, generated="<b>now</b>")
    p = Collector()
    p.feed(page)
    kinds = [k for k, _ in p.scripts]
    assert kinds == ["application/json", "js"]  # only our two script elements
    assert not [t for t, _ in p.tags if t in ("img", "iframe", "object", "embed", "image", "foreignobject", "a")]
    assert not [a for _, a in p.tags if any(k.startswith("on") or k in ("href", "src") for k in a)]
    # outside the data block, hostile text appears only escaped (chart titles and legend)
    outside = page.replace(p.scripts[0][1], "")
    assert "<script>alert" not in outside and "<img src=x" not in outside and "<img onerror" not in outside
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in outside
    svgs = [a for t, a in p.tags if t == "svg"]
    assert svgs and all(a.get("class", "").startswith("chart") for a in svgs)  # only the package's charts
    assert "&lt;b&gt;now&lt;/b&gt;" in page
    data = json.loads(p.scripts[0][1])
    evil = next(e for e in data["entries"] if e["name"] == EVIL_NAME)
    assert evil["status"] == "verified"
    assert EVIL_TEXT in evil["samples"][0]["response"]
    # the page script never assigns markup from data
    js = p.scripts[1][1]
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js
    # CSP pins the script by hash
    import base64
    import hashlib
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page


def test_viewer_samples_carry_boxes_thumbnails_and_ci(board_dir):
    tmp, results = board_dir
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=100, samples_per_run=5)
    e = next(e for e in board.entries if e["name"] == "plain-model")
    assert len(e["samples"]) == 5
    s0 = e["samples"][0]
    assert s0["id"] == "MVTecAD/bottle/000" and s0["gt"] == [[4, 6, 16, 18, "scratch"]]
    assert s0["image"].startswith("data:image/jpeg;base64,") and s0["reference"].startswith("data:image/jpeg;base64,")
    ci = e["ci"]["subdatasets"]["VisA"]["det"]["accuracy"]
    assert ci["low"] <= ci["value"] <= ci["high"] and e["ci"]["resamples"] == 100
    reported = next(e for e in board.entries if e["name"] == "PatchCore")
    assert reported["status"] == "reported" and reported["samples"] == [] and reported["ci"] is None


def test_build_cli_and_committed_board_is_current(tmp_path, capsys):
    """`mmrbench leaderboard build` on the repository's results/ gives the committed leaderboard/ tables."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "lb"
    assert main(["leaderboard", "build", "--results", str(root / "results"), "--out", str(out)]) == 0
    assert "entries" in capsys.readouterr().out
    built = (out / "LEADERBOARD.md").read_text()
    committed = root / "leaderboard" / "LEADERBOARD.md"
    assert committed.is_file() and committed.read_text() == built, (
        "leaderboard/LEADERBOARD.md is stale: run `mmrbench leaderboard build --results results --out leaderboard`")
    # the committed page holds the same board (the build date aside)
    page = (root / "leaderboard" / "index.html").read_text()
    strip = lambda t: re.sub(r"Built [^<]*</p>", "</p>", t)  # noqa: E731
    assert strip(page) == strip((out / "index.html").read_text()), "leaderboard/index.html is stale"
