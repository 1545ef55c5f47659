"""MMAD's published tables shipped as reported rows: equal to the CSVs of jam-cc/MMAD's all_result/
(checked against a fetched copy when present) and consistent with MMAD's own definitions offline."""
from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path
from statistics import fmean

import pytest

from mmrbench.mmad.data import SUBTASKS
from mmrbench.mmad.reported import SOURCE_COMMIT, load_reported

MIRROR = Path(os.environ.get("MMAD_REPO_GIT", "/work/.mirror/jam-cc+MMAD/repo"))
DATASETS = ("DS-MVTec", "MVTec-LOCO", "VisA", "GoodsAD")


def _mirror_has_commit() -> bool:
    if not MIRROR.exists():
        return False
    r = subprocess.run(["git", "-C", str(MIRROR), "cat-file", "-e", f"{SOURCE_COMMIT}^{{commit}}"], capture_output=True)
    return r.returncode == 0


def test_every_entry_cites_a_file_and_has_the_table():
    entries = load_reported()
    assert len(entries) == 22
    assert len({e.file for e in entries}) == 22
    for e in entries:
        assert e.file.startswith("all_result/answers_") and e.file.endswith(".csv") and len(e.blob) == 40
        assert e.citation.endswith(e.file) and SOURCE_COMMIT in e.citation
        assert set(e.rows) == {*DATASETS, "Average"}
        assert list(e.columns[:8]) == [*SUBTASKS, "Average"]
    gpt4o = next(e for e in entries if e.model == "gpt-4o")
    assert gpt4o.shots == 1 and gpt4o.rows["Average"]["Average"] == pytest.approx(74.30601238404245, abs=0)


@pytest.mark.parametrize("entry", load_reported(), ids=lambda e: e.file.split("/")[-1])
def test_rows_follow_mmads_definitions(entry):
    """Offline checks that the numbers are the table MMAD's summary defines (catches a mangled copy)."""
    for name in (*DATASETS, "Average"):
        row = entry.rows[name]
        assert row["Average"] == pytest.approx(fmean(row[s] for s in SUBTASKS), abs=1e-9)
    for col in entry.columns:
        assert entry.rows["Average"][col] == pytest.approx(fmean(entry.rows[d][col] for d in DATASETS), abs=1e-9)
    for d in DATASETS:
        row = entry.rows[d]
        p, r = row["Precision"], row["Recall"]
        assert row["F1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-9)
        if "Miss" in row:
            assert row["Recall"] == pytest.approx(100 - row["Miss"], abs=1e-9)
            # AD = mean of normal accuracy (100 - overkill) and anomalous accuracy (recall)
            assert row["Anomaly Detection"] == pytest.approx((100 - row["Overkill"] + row["Recall"]) / 2, abs=1e-9)


@pytest.mark.skipif(not _mirror_has_commit(), reason=f"no fetched copy of jam-cc/MMAD at {SOURCE_COMMIT[:7]} "
                                                      f"(set MMAD_REPO_GIT to its git dir)")
def test_shipped_rows_equal_the_csv_files():
    for e in load_reported():
        blob = subprocess.run(["git", "-C", str(MIRROR), "rev-parse", f"{SOURCE_COMMIT}:{e.file}"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert blob == e.blob, e.file
        text = subprocess.run(["git", "-C", str(MIRROR), "show", f"{SOURCE_COMMIT}:{e.file}"],
                              capture_output=True, text=True, check=True).stdout
        rows = list(csv.reader(io.StringIO(text)))
        header = rows[0][1:]
        assert tuple(header) == e.columns, e.file
        body = [r for r in rows[1:] if r]
        assert [r[0] for r in body] == list(e.rows), e.file  # the file's row order is kept
        for r in body:
            assert [float(x) for x in r[1:]] == [e.rows[r[0]][c] for c in header], (e.file, r[0])
