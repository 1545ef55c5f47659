"""One board per benchmark, the ablation section, the charts and the CSV/JSON exports."""
import csv
import io
import json
from html.parser import HTMLParser

import pytest

from lb_fixtures import edit_json, make_benchmark, make_run
from mmrbench.cli import main
from mmrbench.leaderboard.board import PAPER_KEY, build_board
from mmrbench.leaderboard.reference import write_reference_entries


@pytest.fixture()
def two_benchmarks(tmp_path):
    """The paper's rows, two runs on the tiny benchmark, and one run on the bundled synthetic one."""
    man, samples = make_benchmark(tmp_path / "bench")
    results = tmp_path / "results"
    write_reference_entries(results)
    make_run(results / "a", man, samples, name="model-a", skill=3)
    make_run(results / "b", man, samples, name="model-b", skill=1)
    return tmp_path, results, man, samples


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.svgs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append({"attrs": a, "marks": 0})
        elif self.svgs and "mark" in (a.get("class") or "").split() and tag == "g":
            self.svgs[-1]["marks"] += 1


def test_runs_and_paper_rows_never_share_a_table(two_benchmarks, synth_small):
    tmp, results, man, samples = two_benchmarks
    from mmrbench.data.manifest import read_manifest
    syn = read_manifest(synth_small, check_files=False).select(split="test")
    make_run(results / "syn", synth_small, syn, name="syn-model", skill=2)
    board = build_board(results, manifest_stores=[tmp / "bench", synth_small.parent], resamples=0)
    names = [b["name"] for b in board.benchmarks]
    info = json.loads((synth_small.parent / "info.json").read_text())
    assert names[0] == "MMR-AD test (paper)"
    assert f"bundled synthetic v{info['generator_version']} (manifest {info['manifest_sha256'][:8]})" in names
    assert any(n.startswith("tiny (manifest ") for n in names) and len(names) == 3
    for e in board.entries:
        assert (e["benchmark"] == PAPER_KEY) == (e["provenance"] == "reported"), e["name"]
    syn_board = next(b for b in board.benchmarks if b["name"].startswith("bundled"))
    assert syn_board["subdatasets"] == sorted({s.subdataset for s in syn})  # no empty paper columns
    # Markdown: every table lives under exactly one benchmark heading
    from mmrbench.leaderboard.render_md import render_markdown
    md = render_markdown(board)
    sections = md.split("\n## ")
    paper = next(s for s in sections if s.startswith("MMR-AD test (paper)"))
    assert "✅ verified" not in paper and "syn-model" not in paper and "model-a" not in paper
    syn_md = next(s for s in sections if s.startswith("bundled synthetic"))
    assert "syn-model" in syn_md and "📄 reported" not in syn_md and "| MVTecAD Acc" not in syn_md


def test_a_maintainer_can_put_runs_on_the_paper_board_and_ablation_runs_sit_beside_their_row(two_benchmarks):
    tmp, results, man, samples = two_benchmarks
    rd = make_run(results / "abl", man, samples, name="my-no-rl", skill=2)
    edit_json(rd / "result.json", lambda d: d["model"].update(recipe="baselines/anomaly-r1/ablations/no-rl-sft.toml"))
    # a manifest the maintainer has not declared: the run stays on its own board, in its ablation section
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=0)
    abl = next(e for e in board.entries if e["name"] == "my-no-rl")
    assert abl["status"] == "verified" and abl["benchmark"] != PAPER_KEY and abl["section"] == "ablation"
    # the maintainer declares that manifest to be the paper's test set
    (tmp / "bench" / "info.json").write_text(json.dumps({"benchmark": "MMR-AD test (paper)"}))
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=0)
    assert [b["key"] for b in board.benchmarks] == [PAPER_KEY]
    section = board.benchmark_entries(PAPER_KEY, "ablation")
    names = [e["name"] for e in section]
    assert names.index("my-no-rl") == names.index("w/o Reinforcement learning") + 1
    assert section[names.index("my-no-rl")]["recipe"] == "no-rl-sft"
    assert set(section[names.index("my-no-rl")]["cells"]) == {"MVTecAD", "VisA"}  # Table 5's columns
    from mmrbench.leaderboard.render_md import render_markdown
    md = render_markdown(board)
    table = md.split("### Anomaly-R1 ablations", 1)[1].split("\n### ", 1)[0]
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    header = lines[0]
    assert "MVTecAD Acc" in header and "VisA Precision" in header and "MPDD" not in header
    row = next(i for i, ln in enumerate(lines) if ln.startswith("| w/o Reinforcement learning"))
    assert lines[row + 1].startswith("| my-no-rl (recipe no-rl-sft)")
    # a run that does not verify is not shown beside the paper's ablation rows
    edit_json(rd / "result.json", lambda d: d["metrics"]["subdatasets"]["VisA"]["det"].update(accuracy=0.99))
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=0)
    e = next(e for e in board.entries if e["name"] == "my-no-rl")
    assert e["status"] == "unverified" and e["section"] == "main" and e["kind"] == "submitted"


def test_charts_have_one_mark_per_model_row(two_benchmarks):
    tmp, results, man, samples = two_benchmarks
    from mmrbench.leaderboard.render_html import render_html
    board = build_board(results, manifest_stores=[tmp / "bench"], resamples=30)
    page = render_html(board)
    p = Tags()
    p.feed(page)
    scatter = [s for s in p.svgs if s["attrs"].get("data-chart") in ("det-loc", "recall-precision")]
    assert len(scatter) == 2 * (4 + 2)  # two kinds x (4 paper subdatasets + 2 tiny ones)
    for s in scatter:
        a = s["attrs"]
        rows = [e for e in board.benchmark_entries(a["data-benchmark"], "main")
                if ((e["cells"].get(a["data-sub"]) or {}).get("accuracy") or {}).get("det") is not None]
        assert s["marks"] == len(rows) == int(a["data-marks"]), a
    paper_rows = board.benchmark_entries(PAPER_KEY, "main")
    assert len(paper_rows) == 21
    bars = [s for s in p.svgs if s["attrs"].get("data-chart") == "categories"]
    assert {s["attrs"]["data-entry"] for s in bars} == {"a", "b"}
    assert all(s["marks"] == 3 for s in bars)  # bottle, screw, candle
    e = next(e for e in board.entries if e["name"] == "model-a")
    for c in e["categories"]:
        ci = c["det_accuracy"]
        assert 0 <= ci["low"] <= ci["value"] <= ci["high"] <= 1
    # AnomalyGPT on the det-vs-loc chart: placed on the "not reported" strip, titled so, never at 0
    assert "AnomalyGPT-7B (reported): detection accuracy % 85.7, localization not reported" in page


def test_build_exports_csv_and_json(two_benchmarks, capsys):
    tmp, results, man, samples = two_benchmarks
    edit_json(results / "a" / "result.json", lambda d: d["model"].update(name="=HYPERLINK(\"x\")"))
    out = tmp / "lb"
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(out), "--manifests",
                 str(tmp / "bench"), "--resamples", "20", "--format", "md,html,csv,json"]) == 0
    assert "leaderboard.csv" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    agpt = [r for r in rows if r["model"] == "AnomalyGPT-7B"]
    assert len(agpt) == 4 * 3 * 2
    assert {r["value_pct"] for r in agpt if r["part"] == "loc"} == {""}
    assert {r["reported"] for r in agpt if r["part"] == "loc"} == {"false"}
    r1 = next(r for r in rows if r["model"] == "Anomaly-R1-7B" and r["section"] == "main" and r["subdataset"] == "VisA"
              and r["metric"] == "accuracy" and r["part"] == "loc")
    assert r1["value_pct"] == "36.4" and r1["status"] == "reported" and r1["benchmark"] == "MMR-AD test (paper)"
    run = [r for r in rows if r["entry"] == "b"]
    assert run and all(r["ci_low_pct"] and r["ci_high_pct"] for r in run)
    assert any(r["model"] == "'=HYPERLINK(\"x\")" for r in rows)  # no formula in a spreadsheet
    data = json.loads((out / "leaderboard.json").read_text())
    assert [b["name"] for b in data["benchmarks"]][0] == "MMR-AD test (paper)"
    assert len(data["entries"]) == 30 and all("samples" not in e for e in data["entries"])
    # only the formats asked for
    out2 = tmp / "lb2"
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(out2), "--format", "csv"]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["leaderboard.csv"]
