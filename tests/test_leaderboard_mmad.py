"""MMAD on the leaderboard: MMAD's published rows on their own board, mmad-v1 runs verified by
re-scoring against the mmad.json named by sha256, the chance-level provider, and no mixing with
MMR-AD numbers."""
from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_mmad_data import write_release  # noqa: E402

from mmrbench.adapters.base import Message, Request, TextPart  # noqa: E402
from mmrbench.leaderboard.board import build_board  # noqa: E402
from mmrbench.leaderboard.write import write_leaderboard  # noqa: E402
from mmrbench.leaderboard.mmad import (PUBLISHED_KEY, PUBLISHED_NAME, reported_slug,  # noqa: E402
                                       write_mmad_reported_entries)
from mmrbench.leaderboard.reference import write_reference_entries  # noqa: E402
from mmrbench.leaderboard.submit import submit_run  # noqa: E402
from mmrbench.mmad.answers import parse_letters  # noqa: E402
from mmrbench.mmad.chance import ChanceModel, option_letters  # noqa: E402
from mmrbench.mmad.data import load_mmad  # noqa: E402
from mmrbench.mmad.reported import SOURCE_COMMIT, load_reported  # noqa: E402
from mmrbench.mmad.run import evaluate_mmad  # noqa: E402
from mmrbench.mmad.task import MMADTask  # noqa: E402
from mmrbench.errors import MMRBenchError  # noqa: E402

EVIL = '<script>alert(1)</script>[x](javascript:alert(2))'


def md_sections(md: str) -> dict[str, str]:
    return {sec.split("\n", 1)[0]: sec for sec in md.split("\n## ")[1:]}


def table_rows(section: str) -> list[list[str]]:
    """Every body row of the Markdown tables in a section, split into stripped cells."""
    out = []
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|:") and not line.startswith("| Model"):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


# -- MMAD's published rows -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mmadpub")
    write_mmad_reported_entries(tmp / "results")
    write_reference_entries(tmp / "results")
    board = write_leaderboard(tmp / "results", tmp / "lb", resamples=0, formats=["md", "html", "csv", "json"])
    return tmp, board


def test_every_shipped_row_is_on_the_mmad_board_exactly(published):
    tmp, board = published
    shipped = load_reported()
    assert len(shipped) == 22
    raw = json.loads((Path(__file__).parents[1] / "mmrbench/mmad/reported.json").read_text())
    assert [e["file"] for e in raw["entries"]] == [r.file for r in shipped]
    entries = board.benchmark_entries(PUBLISHED_KEY)
    assert len(entries) == 22 and all(e["status"] == "reported" for e in entries)
    by_file = {e["mmad"]["file"]: e for e in entries}
    for r, rawe in zip(shipped, raw["entries"]):
        e = by_file[r.file]
        assert e["mmad"]["rows"] == rawe["rows"]  # every dataset row, every column, the exact floats
        assert e["mmad"]["columns"] == rawe["columns"] and e["mmad"]["shots"] == rawe["shots"]
        assert e["source"] == f"github.com/jam-cc/MMAD/blob/{SOURCE_COMMIT}/{r.file}"
    b = next(b for b in board.benchmarks if b["key"] == PUBLISHED_KEY)
    assert b["name"] == PUBLISHED_NAME and board.benchmarks[1] is b  # right after the MMR-AD paper board
    assert b["columns"][-1] == "Average" and len(b["columns"]) == 8
    assert b["datasets"] == ["Average", "DS-MVTec", "MVTec-LOCO", "VisA", "GoodsAD"]

    # Markdown: one table per dataset row; every cell equals the shipped value to one decimal
    md = (tmp / "lb" / "LEADERBOARD.md").read_text()
    sec = md_sections(md)[PUBLISHED_NAME]
    parts = {p.split("\n", 1)[0]: p for p in sec.split("\n### ")[1:]}
    assert list(parts) == ["Average over the source datasets", "DS-MVTec", "MVTec-LOCO", "VisA", "GoodsAD"]
    for title, row in zip(parts, b["datasets"]):
        rows = table_rows(parts[title])
        assert len(rows) == 22
        for cells, r in zip(rows, shipped):
            assert cells[4] == "mmad-compatible" and cells[3] == str(r.shots)
            want = [f"{r.rows[row][c]:.1f}" for c in b["columns"]]
            assert cells[5:13] == want, (title, r.file)
            if row == "Average":
                assert cells[13] == r.file.replace("_", "\\_")
    # CSV: one line per entry x dataset row x column, the shipped value to one decimal
    lines = [x for x in csv.DictReader(io.StringIO((tmp / "lb" / "leaderboard.csv").read_text()))
             if x["benchmark"] == PUBLISHED_NAME]
    assert len(lines) == 22 * 5 * 8
    gpt = next(r for r in shipped if r.model == "gpt-4o")
    line = next(x for x in lines if x["model"] == "gpt-4o" and x["subdataset"] == "VisA"
                and x["metric"] == "Defect Localization")
    assert line["value_pct"] == f"{gpt.rows['VisA']['Defect Localization']:.1f}" and line["status"] == "reported"


def test_no_mmr_ad_row_shares_an_mmad_table(published):
    tmp, board = published
    sec = md_sections((tmp / "lb" / "LEADERBOARD.md").read_text())
    assert "GPT-4o " not in sec[PUBLISHED_NAME] and "Anomaly-R1" not in sec[PUBLISHED_NAME]
    assert "gpt-4o" not in sec["MMR-AD test (paper)"] and "mmad-compatible" not in sec["MMR-AD test (paper)"]
    for e in board.entries:
        assert (e["benchmark"] == PUBLISHED_KEY) == (e.get("mmad") is not None)
    page = (tmp / "lb" / "index.html").read_text()
    charts = page.split('data-benchmark="mmad-published"', 1)[1].split("</section>", 1)[0]
    assert charts.count('data-chart="mmad-subtask"') == 9  # the figure + 8 panels (7 subtasks + Average)
    assert charts.count('<g class="mark') == 8 * 22  # one bar per model row in every panel
    assert "Anomaly-R1" not in charts


def test_tampered_published_row_is_unverified(tmp_path):
    write_mmad_reported_entries(tmp_path / "results")
    r = load_reported()[5]
    p = tmp_path / "results" / "mmad-reported" / reported_slug(r) / "result.json"
    d = json.loads(p.read_text())
    d["metrics"]["rows"]["VisA"]["Defect Analysis"] = 99.0
    p.write_text(json.dumps(d))
    board = build_board(tmp_path / "results", resamples=0)
    e = next(e for e in board.entries if e["id"].endswith(reported_slug(r)))
    assert e["status"] == "unverified" and e["kind"] == "submitted"
    assert e["reasons"] == [f"reported row differs from MMAD's shipped table: VisA Defect Analysis is 99.0, "
                            f"MMAD's {r.file} says {r.rows['VisA']['Defect Analysis']!r}"]
    d["reference"]["file"] = "all_result/answers_1_shot_made-up_accuracy.csv"
    p.write_text(json.dumps(d))
    e = next(e for e in build_board(tmp_path / "results", resamples=0).entries if e["id"].endswith(reported_slug(r)))
    assert e["status"] == "unverified" and "not one of MMAD's shipped all_result tables" in e["reasons"][0]


# -- the chance level --------------------------------------------------------------------------------
def _request(rid: str, text: str) -> Request:
    return Request(rid, [Message("user", [TextPart(text)])])


def test_chance_picks_an_option_letter_uniformly_and_reproducibly(tmp_path):
    data = load_mmad(write_release(tmp_path / "MMAD"))
    task = MMADTask(data, shots=1)
    queries = task.select()
    model = ChanceModel("seed-0")
    for q in queries:
        text = "".join(p.text for p in task.build_request(q).messages[0].parts if hasattr(p, "text"))
        assert option_letters(text) == [list(x.letters) for x in q.questions]
        resp = model.generate([task.build_request(q)])[0]
        letters = parse_letters(resp.text, [x.letters for x in q.questions])
        assert all(letter in x.letters for letter, x in zip(letters, q.questions))  # every answer parses, in range
        assert resp.text == ChanceModel("seed-0").generate([task.build_request(q)])[0].text  # seeded
    two = "Question: Is it defective? \nA. Yes.\nB. No.\n"
    picks = [ChanceModel("seed-0").answer(_request(f"img{i}#0", two)) for i in range(400)]
    share = picks.count("Answer: A") / len(picks)
    assert set(picks) == {"Answer: A", "Answer: B"} and 0.4 < share < 0.6
    assert ChanceModel("seed-1").answer(_request("x#0", two)) in ("Answer: A", "Answer: B")
    bad = ChanceModel("seed-0").generate([_request("x#0", "no options here")])[0]
    assert bad.status == "error" and bad.text is None


# -- mmad-v1 runs --------------------------------------------------------------------------------------
@pytest.fixture()
def mmad_run(tmp_path):
    """A chance-level run on a tiny MMAD-format release, declared as MMAD in the maintainer's store."""
    release = write_release(tmp_path / "store" / "MMAD")
    (release / "mmad-info.json").write_text(json.dumps({"benchmark": "MMAD"}))
    run = tmp_path / "run"
    from mmrbench.cards import ModelCard
    card = ModelCard(name="chance-level", provider="chance", model_id="seed-0", display_name=EVIL)
    report = evaluate_mmad(card, release, run)
    return tmp_path, release, run, report


def test_verified_run_rescores_equal_and_lands_on_the_mmad_board(mmad_run):
    tmp, release, run, report = mmad_run
    results = tmp / "results"
    write_mmad_reported_entries(results)
    dest, ver = submit_run(run, results_dir=results, manifest=release / "mmad.json")
    assert ver.status == "verified" and ver.reasons == []
    assert ver.recomputed["rows"] == report.to_json()["rows"]  # re-scored from predictions, equal
    assert (dest / "predictions.jsonl.gz").is_file() and dest.name.startswith("mmad-")
    board = write_leaderboard(results, tmp / "lb", manifest_stores=[tmp / "store"], resamples=0)
    e = next(e for e in board.entries if e["id"] == dest.name)
    assert e["status"] == "verified" and e["benchmark"] == PUBLISHED_KEY and e["kind"] == "baseline"
    assert e["mmad"]["rows"] == json.loads((run / "result.json").read_text())["metrics"]["rows"]
    assert e["mmad"]["mode"] == "strict"
    # the hostile display name stays text everywhere
    md = (tmp / "lb" / "LEADERBOARD.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;\\[x\\](javascript:alert(2))" in md
    page = (tmp / "lb" / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the chart legend
    # without the store the run cannot be checked
    e = next(e for e in build_board(results, resamples=0).entries if e["id"] == dest.name)
    assert e["status"] == "unverified" and e["reasons"][0].startswith("mmad.json not found")


def test_tampered_run_is_unverified_with_the_reason(mmad_run):
    tmp, release, run, _ = mmad_run
    results = tmp / "results"
    dest, _ = submit_run(run, results_dir=results, manifest=release)
    d = json.loads((dest / "result.json").read_text())
    claimed = d["metrics"]["rows"]["VisA"]["Defect Classification"]
    d["metrics"]["rows"]["VisA"]["Defect Classification"] = 100.0 if claimed != 100.0 else 0.0
    (dest / "result.json").write_text(json.dumps(d))
    e = build_board(results, manifest_stores=[tmp / "store"], resamples=0).entries[0]
    assert e["status"] == "unverified" and e["kind"] == "submitted"
    want = "null" if claimed is None else f"{claimed:.4f}"
    assert e["reasons"] == [f"metrics edited: VisA Defect Classification claimed "
                            f"{d['metrics']['rows']['VisA']['Defect Classification']:.4f} but recomputes to {want}"]
    with pytest.raises(MMRBenchError, match="submission rejected .*metrics edited"):
        submit_run(dest, results_dir=tmp / "results2", manifest=release)
    # edited predictions
    shutil.rmtree(dest)
    dest, _ = submit_run(run, results_dir=results, manifest=release)
    raw = gzip.decompress((dest / "predictions.jsonl.gz").read_bytes()).replace(b"Answer: A", b"Answer: B")
    (dest / "predictions.jsonl.gz").write_bytes(gzip.compress(raw))
    e = build_board(results, manifest_stores=[tmp / "store"], resamples=0).entries[0]
    assert e["status"] == "unverified" and e["reasons"][0].startswith("predictions edited: predictions.jsonl hashes to")


def test_run_on_other_mmad_data_gets_its_own_board(mmad_run):
    tmp, release, run, _ = mmad_run
    (release / "mmad-info.json").unlink()  # not declared as MMAD's release: its own board
    results = tmp / "results"
    write_mmad_reported_entries(results)
    write_reference_entries(results)
    dest, _ = submit_run(run, results_dir=results, manifest=release)
    board = build_board(results, manifest_stores=[tmp / "store"], resamples=0)
    e = next(e for e in board.entries if e["id"] == dest.name)
    sha = json.loads((run / "result.json").read_text())["dataset"]["sha256"]
    assert e["status"] == "verified" and e["benchmark"] == f"mmad-sha-{sha[:16]}"
    assert [b["name"] for b in board.benchmarks] == ["MMR-AD test (paper)", PUBLISHED_NAME, f"MMAD (mmad.json {sha[:8]})"]
    own = next(b for b in board.benchmarks if b["key"] == e["benchmark"])
    assert own["datasets"] == ["Average", "DS-MVTec", "VisA"]
    assert len(board.benchmark_entries(own["key"])) == 1


def test_schema_errors_skip_the_file_with_the_reason(mmad_run):
    tmp, release, run, _ = mmad_run
    results = tmp / "results"
    dest, _ = submit_run(run, results_dir=results, manifest=release)
    d = json.loads((dest / "result.json").read_text())
    d["metrics"]["rows"]["VisA"]["Average"] = 150
    (dest / "result.json").write_text(json.dumps(d))
    board = build_board(results, manifest_stores=[tmp / "store"], resamples=0)
    assert board.entries == []
    assert board.skipped == [f"{dest.name}/result.json: $.metrics.rows[\"VisA\"].Average: "
                             "must be a percentage in [0, 100] or null (got 150)"]


def test_validate_cli_checks_and_rescores_an_mmad_run(mmad_run, capsys):
    from mmrbench.cli import main
    tmp, release, run, _ = mmad_run
    assert main(["validate", str(run), "--manifest", str(release / "mmad.json")]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'result.json'}: verified" in out or f"{run}: verified" in out
    d = json.loads((run / "result.json").read_text())
    d["metrics"]["rows"]["DS-MVTec"]["Average"] = -1
    (run / "result.json").write_text(json.dumps(d))
    assert main(["validate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "$.metrics.rows[\"DS-MVTec\"].Average: must be a percentage in [0, 100] or null (got -1)" in err
    assert "Traceback" not in err
