"""MMAD's published per-model tables as ``reported`` rows (never re-scorable: no predictions exist).

The numbers are those of the CSV files in the ``all_result/`` folder of github.com/jam-cc/MMAD at
commit ``SOURCE_COMMIT``; each entry names its file and the file's git blob id, so a reader can check
any row. MMAD's repository carries no licence file, so the CSVs themselves are not redistributed:
``reported.json`` holds the numbers (facts) with those citations, and ``tests/test_mmad_reported.py``
compares them with a fetched copy of the repository whenever one is present.

The figures were computed by MMAD's summary script, i.e. in what this package calls the
``mmad-compatible`` mode (answers that are not a letter left out); runs of this harness default to
``strict``, so the two are only comparable in ``mmad-compatible`` mode.

``build_reported(git_dir)`` regenerates the file from a clone (``python -m mmrbench.mmad.reported GIT_DIR``).
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

SOURCE_REPO = "jam-cc/MMAD"
SOURCE_COMMIT = "bad03b44c30fdb4d0e1774e07e0f245fbaae3b6c"
RESULT_DIR = "all_result"
_NAME = re.compile(r"^answers_(\d+)_shot_(.+?)_accuracy(?:_(.+))?\.csv$")


@dataclass(frozen=True)
class ReportedMMAD:
    model: str
    shots: int
    note: str | None
    file: str
    blob: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, float]]

    @property
    def citation(self) -> str:
        return f"github.com/{SOURCE_REPO}/blob/{SOURCE_COMMIT}/{self.file}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "shots": self.shots, "note": self.note, "file": self.file, "blob": self.blob,
                "columns": list(self.columns), "rows": self.rows, "provenance": "reported",
                "protocol": "mmad-v1", "scoring_mode": "mmad-compatible", "citation": self.citation}


def parse_csv(text: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """One of MMAD's accuracy CSVs: header ``,col,...``, then one row per dataset and ``Average``."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    columns = header[1:]
    rows = {}
    for r in reader:
        if not r:
            continue
        rows[r[0]] = {c: float(v) for c, v in zip(columns, r[1:])}
    return columns, rows


def _git(git_dir: str | Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(git_dir), *args], check=True, capture_output=True,
                          text=True).stdout


def build_reported(git_dir: str | Path, commit: str = SOURCE_COMMIT) -> dict[str, Any]:
    entries = []
    for line in _git(git_dir, "ls-tree", commit, f"{RESULT_DIR}/").splitlines():
        meta, path = line.split("\t", 1)
        blob = meta.split()[2]
        m = _NAME.match(Path(path).name)
        if not m:
            continue
        columns, rows = parse_csv(_git(git_dir, "show", f"{commit}:{path}"))
        entries.append(ReportedMMAD(model=m.group(2), shots=int(m.group(1)), note=m.group(3), file=path, blob=blob,
                                    columns=tuple(columns), rows=rows).to_json())
    return {"source": {"repo": SOURCE_REPO, "commit": commit, "folder": RESULT_DIR}, "entries": entries}


def load_reported() -> list[ReportedMMAD]:
    raw = json.loads(resources.files("mmrbench.mmad").joinpath("reported.json").read_text(encoding="utf-8"))
    return [ReportedMMAD(model=e["model"], shots=e["shots"], note=e["note"], file=e["file"], blob=e["blob"],
                         columns=tuple(e["columns"]), rows=e["rows"]) for e in raw["entries"]]


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    data = build_reported(sys.argv[1])
    out = Path(__file__).with_name("reported.json")
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(data['entries'])} entries)")
