"""What the board build trusts (issue #11, items 12-14).

* thumbnails only from manifests the maintainer names (``--manifests``), and only from image paths that
  resolve, after symbolic links, inside that manifest's data root (no absolute path, ``..`` or link out);
* a ``reported`` row counts only when it equals the shipped paper table, else it is unverified with why;
* an unreadable entry (a corrupt ``.gz``) is unverified with the reason; the rest of the board builds.
"""
import base64
import dataclasses
import gzip
import io
import json
import os
import shutil

import pytest
from PIL import Image

from lb_fixtures import edit_json, make_benchmark, make_run
from mmrbench.cli import main
from mmrbench.data.manifest import write_manifest
from mmrbench.leaderboard.board import build_board
from mmrbench.leaderboard.reference import table4, write_reference_entries

SECRET_COLOR = (255, 0, 255)


def _thumb_colors(data_url):
    raw = base64.b64decode(data_url.split(",", 1)[1])
    return Image.open(io.BytesIO(raw)).convert("RGB").getpixel((2, 2))


@pytest.fixture()
def secret(tmp_path):
    """A private image outside any data root (magenta, so a leak is recognisable)."""
    d = tmp_path / "private"
    d.mkdir()
    p = d / "secret.png"
    Image.new("RGB", (64, 48), SECRET_COLOR).save(p)
    return p


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_thumbnails_never_leave_the_data_root(tmp_path, secret, how):
    man, samples = make_benchmark(tmp_path / "bench")
    root = man.parent
    if how == "absolute":
        bad = str(secret)
    elif how == "dotdot":
        bad = os.path.relpath(secret, root)
        assert bad.startswith("..")
    else:
        link = root / "MVTecAD" / "bottle" / "link.png"
        link.symlink_to(secret)
        bad = link.relative_to(root).as_posix()
    samples = [dataclasses.replace(s, image=bad) if s.id == "MVTecAD/bottle/000" else s for s in samples]
    write_manifest(man, samples)
    make_run(tmp_path / "results" / "run", man, samples, name="leaky")
    board = build_board(tmp_path / "results", manifest_stores=[root], resamples=0, samples_per_run=3)
    e = board.entries[0]
    assert e["status"] == "verified"  # scoring does not need the image; only the thumbnail is refused
    shown = {s["id"]: s for s in e["samples"]}
    assert shown["MVTecAD/bottle/000"]["image"] is None
    assert shown["MVTecAD/bottle/000"]["reference"].startswith("data:image/jpeg")  # its own reference is fine
    assert shown["MVTecAD/bottle/001"]["image"].startswith("data:image/jpeg")
    for s in e["samples"]:
        for url in (s["image"], s["reference"]):
            assert url is None or _thumb_colors(url) != SECRET_COLOR


def test_manifest_found_in_results_is_not_trusted(tmp_path):
    """A submitter who ships a manifest inside results/ gets neither verification nor thumbnails from it."""
    man, samples = make_benchmark(tmp_path / "bench")
    results = tmp_path / "results"
    make_run(results / "run", man, samples, name="self-served")
    shutil.copytree(tmp_path / "bench", results / "run" / "data")  # manifest + images beside the entry
    board = build_board(results, manifest_stores=[], resamples=0)
    e = board.entries[0]
    assert e["status"] == "unverified" and e["reasons"][0].startswith("manifest not found")
    assert e["samples"] == []
    # the maintainer names the store: verified, with thumbnails
    board = build_board(results, manifest_stores=[tmp_path / "bench"], resamples=0, samples_per_run=2)
    assert board.entries[0]["status"] == "verified" and board.entries[0]["samples"][0]["image"]


def test_reported_row_must_equal_the_shipped_table(tmp_path):
    results = tmp_path / "results"
    write_reference_entries(results)
    gpt4o = results / "reported" / table4()["GPT-4o"].slug / "result.json"
    edit_json(gpt4o, lambda d: d["metrics"]["subdatasets"]["VisA"]["det"].update(accuracy=0.99))
    fake = results / "reported" / "table4-my-model"
    fake.mkdir()
    shutil.copyfile(results / "reported" / table4()["GPT-5"].slug / "result.json", fake / "result.json")
    edit_json(fake / "result.json", lambda d: d["model"].update(name="My Model"))
    board = build_board(results, resamples=0)
    by_name = {e["name"]: e for e in board.entries}
    assert by_name["GPT-4o"]["status"] == "unverified"
    assert "VisA det.accuracy is 0.99, the paper's Table 4 says 0.576" in by_name["GPT-4o"]["reasons"][0]
    assert by_name["My Model"]["status"] == "unverified"
    assert "not in the shipped Table 4 or 5" in by_name["My Model"]["reasons"][0]
    assert by_name["GPT-5"]["status"] == "reported"
    assert by_name["GPT-4o"]["kind"] == "submitted"  # not shown among the paper's rows
    assert sum(e["status"] == "reported" for e in board.entries) == 27  # 28 shipped + 1 invented - 2 refused


def test_corrupt_gz_entry_is_unverified_and_the_board_builds(tmp_path, capsys):
    man, samples = make_benchmark(tmp_path / "bench")
    results = tmp_path / "results"
    make_run(results / "good", man, samples, name="good-model")
    bad = make_run(results / "bad", man, samples, name="bad-model")
    raw = (bad / "predictions.jsonl").read_bytes()
    (bad / "predictions.jsonl").unlink()
    blob = bytearray(gzip.compress(raw, mtime=0))
    blob[30:60] = b"x" * 30  # valid header, damaged deflate stream
    (bad / "predictions.jsonl.gz").write_bytes(bytes(blob))
    out = tmp_path / "lb"
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(out),
                 "--manifests", str(tmp_path / "bench"), "--resamples", "0"]) == 0
    data = json.loads((out / "index.html").read_text().split('id="lb-data">', 1)[1].split("</script>", 1)[0])
    by_name = {e["name"]: e for e in data["entries"]}
    assert by_name["good-model"]["status"] == "verified"
    assert by_name["bad-model"]["status"] == "unverified"
    assert "unreadable predictions" in by_name["bad-model"]["reasons"][0]
    assert "bad-model" in (out / "LEADERBOARD.md").read_text()


def test_unreadable_result_json_is_listed_and_the_board_builds(tmp_path):
    results = tmp_path / "results"
    write_reference_entries(results)
    (results / "broken").mkdir()
    (results / "broken" / "result.json").write_bytes(b"\xff\xfe not json")
    (results / "deep").mkdir()
    (results / "deep" / "result.json").write_text("[" * 100000)
    board = build_board(results, resamples=0)
    assert len(board.entries) == 28
    assert len(board.skipped) == 2 and all(s.startswith(("broken/", "deep/")) for s in board.skipped)


@pytest.mark.parametrize("argv,needle", [
    (["--format", "md,xls"], "unknown format xls"),
    (["--format", ""], "unknown format"),
    (["--manifests", "/nonexistent/store"], "--manifests /nonexistent/store: no such file or folder"),
    (["--resamples", "-1"], "--resamples -1: must be 0 or more"),
    (["--results", "/nonexistent/results"], "results folder not found"),
])
def test_bad_build_input_is_one_line(tmp_path, capsys, argv, needle):
    results = tmp_path / "results"
    write_reference_entries(results)
    rc = main(["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "lb"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("mmrbench: error: ")
