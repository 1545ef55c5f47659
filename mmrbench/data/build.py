"""``mmrbench data build``: MMR-AD from the user's own copies of its 14 public sources.

The images are never redistributed; a user lists the sources they have in ``SOURCES.toml``::

    [MVTecAD]
    root = "/data/mvtec_anomaly_detection"
    [RealIAD]
    root = "/data/Real-IAD"
    resolution = "1024"            # format options (see ``mmrbench data import --help``)
    # format = "realiad"           # default: the format of the source named by the table
    # sample = 5000                # this source's sample size (overrides --sample paper)

and the build writes into ``OUT``:

* ``parts/<source>/<nnn>-<category>.jsonl``: one finished category each (written atomically; a
  rerun skips finished parts, so an interrupted build resumes where it stopped);
* ``manifest.jsonl``: every sample, with ``subdataset`` = its source and ``gad_split`` = the
  paper's split (``test`` for the four held-out sources MVTecAD, VisA, MVTec3D, MPDD; ``train`` for
  the ten others); ``train.jsonl`` / ``test.jsonl``: the two sides;
* ``build.json``: what was built, per source and category, and any category dropped for leakage.

It streams: one category's items, its references' features and its samples are in memory at a
time, never the whole 127k. Every sample gets a reference by the appendix-B retrieval among the
training normals of its own category (never itself, never another view of the same object).
``--sample paper`` keeps Table 1's image count per source: whole objects (view groups) in a
seeded random order until the count is reached, the last object trimmed to hit it exactly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mmrbench.data.importers import FORMATS, WALK_OPTIONS, walk
from mmrbench.data.importers.common import (
    ImportOptions, RawItem, default_id, category_samples, enforce_group_splits, group_by_category,
)
from mmrbench.data.manifest import dumps_sample, file_sha256
from mmrbench.errors import ConfigError, MMRBenchError

log = logging.getLogger(__name__)

#: the paper's held-out evaluation sources (the other ten train)
PAPER_HOLDOUT = ("MVTecAD", "VisA", "MVTec3D", "MPDD")
#: Table 1: sampled images per source
PAPER_COUNTS = {
    "MVTecAD": 2485, "VisA": 2287, "MVTecLOCO": 1889, "MVTec3D": 1176, "MPDD": 540, "GoodsAD": 2028,
    "RealIAD": 50389, "RealIAD-D3": 3632, "MANTA": 35347, "MIAD": 16026, "CableInspect": 2701, "WFDD": 291,
    "TextureAD": 1876, "3CAD": 6470,
}
#: source name -> import format
SOURCE_FORMATS = {v: k for k, v in FORMATS.items() if v}
SOURCE_KEYS = {"root", "format", "sample"}


@dataclass
class SourceSpec:
    name: str
    format: str
    root: Path
    options: dict = field(default_factory=dict)
    sample: int | None = None


def read_sources(path) -> list[SourceSpec]:
    """Parse SOURCES.toml: one table per source; relative roots are relative to the file."""
    from mmrbench.validation import read_toml
    p = Path(path)
    d = read_toml(p, "sources file", error=ConfigError)
    if set(d) == {"sources"} and isinstance(d["sources"], dict):
        d = d["sources"]
    specs = []
    for name, t in d.items():
        if not isinstance(t, dict):
            raise ConfigError(f"{p}: [{name}]: expected a table with root = \"...\", got {type(t).__name__}")
        fmt = t.get("format") or SOURCE_FORMATS.get(name)
        if fmt is None:
            raise ConfigError(f"{p}: [{name}]: unknown source (expected one of {', '.join(PAPER_COUNTS)}) "
                              "and no format = \"...\" given")
        if fmt not in FORMATS or fmt == "mmrad":
            raise ConfigError(f"{p}: [{name}]: field 'format': unknown format '{fmt}' "
                              f"(expected one of {', '.join(f for f in FORMATS if f != 'mmrad')})")
        if not isinstance(t.get("root"), str):
            raise ConfigError(f"{p}: [{name}]: field 'root': expected the dataset folder as a string")
        extra = set(t) - SOURCE_KEYS - set(WALK_OPTIONS.get(fmt, ()))
        if extra:
            raise ConfigError(f"{p}: [{name}]: unknown field(s) {', '.join(sorted(extra))} (format '{fmt}' takes "
                              f"{', '.join(sorted(SOURCE_KEYS | set(WALK_OPTIONS.get(fmt, ()))))})")
        sample = t.get("sample")
        if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 1):
            raise ConfigError(f"{p}: [{name}]: field 'sample': expected a positive integer, got {sample!r}")
        root = Path(os.path.expanduser(t["root"]))
        if not root.is_absolute():
            root = (p.parent / root).resolve()
        specs.append(SourceSpec(name, fmt, root, {k: t[k] for k in WALK_OPTIONS.get(fmt, ()) if k in t}, sample))
    if not specs:
        raise ConfigError(f"{p}: no sources listed (one [<Source>] table with root = \"...\" per dataset you have)")
    return specs


def _walk(spec: SourceSpec) -> Iterator[RawItem]:
    items = walk(spec.format, spec.root, subdataset=spec.name, **spec.options)
    if isinstance(items, list):  # list walkers (VisA's CSV) may interleave categories
        items.sort(key=lambda it: (it.subdataset, it.category))
    return iter(items)


def _base(spec: SourceSpec) -> Path:
    return spec.root if spec.root.is_dir() else spec.root.parent


def _hash(text: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{text}".encode()).hexdigest()


def usable(it: RawItem) -> bool:
    """False for an anomalous item whose annotation has no region (the build would skip it)."""
    if it.label != "anomalous":
        return True
    if it.boxes is not None:
        return bool(it.boxes)
    if it.mask is None:
        return it.split != "test"
    from mmrbench.data.importers.common import read_mask
    from mmrbench.data.masks import boxes_from_mask

    m = read_mask(it.mask)
    if it.crop is not None:
        from mmrbench.data.importers.common import image_size
        iw, ih = image_size(it.image)
        sx, sy = m.shape[1] / iw, m.shape[0] / ih
        x1, y1, x2, y2 = it.crop
        m = m[round(y1 * sy):round(y2 * sy), round(x1 * sx):round(x2 * sx)]
    return bool(boxes_from_mask(m))


def choose_sample(spec: SourceSpec, n: int, seed: int) -> tuple[list[str], int]:
    """Ids of ``n`` samples of a source: whole view groups in a seeded order, the last one trimmed.
    Items the build would skip (empty masks) are not candidates. Returns (ids, images available)."""
    groups: dict[str, list[str]] = {}
    total = 0
    for _, items in group_by_category(_walk(spec)):
        for it in enforce_group_splits(items):
            if not usable(it):
                continue
            sid = it.id or default_id(it, _base(spec))
            groups.setdefault(it.group or sid, []).append(sid)
            total += 1
    keep: list[str] = []
    for g in sorted(groups, key=lambda g: _hash(g, seed)):
        if len(keep) >= n:
            break
        keep += sorted(groups[g])[: n - len(keep)]
    return keep, total


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@dataclass
class BuildReport:
    out: Path
    manifest: Path
    sha256: str
    samples: int
    per_source: dict[str, dict]
    dropped_categories: list[str]
    resumed_parts: int
    seconds: float


def build(sources, out, *, sample: str | None = None, reference: str = "retrieval", seed: int = 0,
          holdout=PAPER_HOLDOUT, on_leak: str = "drop", progress: bool = False, files: str = "relative") -> BuildReport:
    """Import every listed source, category by category, and write the combined manifest."""
    import time

    from mmrbench.data.splits import category_key

    t0 = time.perf_counter()
    specs = read_sources(sources) if not isinstance(sources, list) else sources
    if sample not in (None, "paper"):
        raise ConfigError(f"unknown --sample '{sample}' (expected 'paper')")
    if on_leak not in ("error", "drop"):
        raise ConfigError(f"unknown leakage policy '{on_leak}' (expected error or drop)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opts = ImportOptions(files=files, reference=reference, seed=seed, progress=False)
    settings = {"sources": {s.name: {"format": s.format, "root": str(s.root), "options": s.options, "sample": s.sample}
                            for s in specs},
                "sample": sample, "reference": reference, "seed": seed, "files": files, "holdout": sorted(holdout)}
    state = out / "build_state.json"
    if state.is_file():
        old = json.loads(state.read_text(encoding="utf-8"))
        if old != settings:
            raise MMRBenchError(f"{out}: holds a build with other settings ({state}); resume with the same "
                                "sources and options, or build into a new folder")
    else:
        state.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    # pass 1 (sampling only): which samples each source keeps; saved so that a resumed build keeps them
    keeps: dict[str, set[str] | None] = {s.name: None for s in specs}
    available: dict[str, int] = {}
    for s in specs:
        n = s.sample or (PAPER_COUNTS.get(s.name) if sample == "paper" else None)
        if n is None:
            continue
        f = out / "parts" / _safe(s.name) / "sample.json"
        if f.is_file():
            d = json.loads(f.read_text(encoding="utf-8"))
            keeps[s.name], available[s.name] = set(d["ids"]), d["available"]
            continue
        ids, total = choose_sample(s, n, seed)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"target": n, "available": total, "ids": ids}) + "\n", encoding="utf-8")
        keeps[s.name], available[s.name] = set(ids), total

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc="build", unit="img", total=sum(len(k) for k in keeps.values() if k is not None) or None)
    per_source: dict[str, dict] = {}
    parts: list[tuple[str, str, Path]] = []  # (source, category, file)
    resumed = 0
    for s in specs:
        src_dir = out / "parts" / _safe(s.name)
        src_dir.mkdir(parents=True, exist_ok=True)
        cats: dict[str, dict] = {}
        for ci, ((_, cat), items) in enumerate(group_by_category(_walk(s))):
            part = src_dir / f"{ci:03d}-{_safe(cat)}.jsonl"
            parts.append((s.name, cat, part))
            if part.is_file():
                resumed += 1
                with open(part, encoding="utf-8") as f:
                    n = sum(1 for _ in f)
                cats[cat] = {"samples": n, "resumed": True}
                if bar is not None:
                    bar.update(n)
                continue
            # seeded by (seed, source name, category), not by the order of the sources file
            rng = np.random.default_rng(np.random.SeedSequence([seed, int(_hash(s.name, 0)[:8], 16), ci]))
            skipped: list[str] = []
            samples = category_samples(enforce_group_splits(items), _base(s), out, opts, rng, reference_all=True,
                                       skipped=skipped, keep=keeps[s.name])
            split = "test" if s.name in holdout else "train"
            tmp = part.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                for smp in samples:
                    smp.extra["gad_split"] = split
                    f.write(dumps_sample(smp) + "\n")
            os.replace(tmp, part)
            cats[cat] = {"samples": len(samples), "skipped": len(skipped)}
            if bar is not None:
                bar.update(len(samples))
            del samples, items
        per_source[s.name] = {"format": s.format, "gad_split": "test" if s.name in holdout else "train",
                              "categories": cats, "samples": sum(c["samples"] for c in cats.values())}
        if s.name in available:
            per_source[s.name]["available"] = available[s.name]
    if bar is not None:
        bar.close()

    # leakage: a category name on both sides of the paper split
    test_keys = {category_key(c): f"{src}/{c}" for src, c, _ in parts if src in holdout}
    leaks = sorted({f"{src}/{c} (held out: {test_keys[category_key(c)]})" for src, c, _ in parts
                    if src not in holdout and category_key(c) in test_keys})
    if leaks and on_leak == "error":
        raise MMRBenchError(f"category leakage between train and test: {'; '.join(leaks)} (use --on-leak drop)")
    dropped = {(src, c) for src, c, _ in parts if src not in holdout and category_key(c) in test_keys}

    # concatenate, streaming; check that no view group lies on both sides
    man, tr, te = out / "manifest.jsonl", out / "train.jsonl", out / "test.jsonl"
    groups: dict[str, set[bytes]] = {"train": set(), "test": set()}
    n = 0
    with open(man.with_suffix(".tmp"), "w", encoding="utf-8") as fm, open(tr.with_suffix(".tmp"), "w", encoding="utf-8") as ft, \
            open(te.with_suffix(".tmp"), "w", encoding="utf-8") as fe:
        for src, cat, part in parts:
            side = "test" if src in holdout else "train"
            with open(part, encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    g = d.get("group")
                    if g:
                        groups[side].add(hashlib.sha1(g.encode()).digest()[:12])
                    if (src, cat) in dropped:
                        continue
                    fm.write(line)
                    (fe if side == "test" else ft).write(line)
                    n += 1
    if groups["train"] & groups["test"]:
        raise MMRBenchError("a view group lies on both sides of the split (two sources share group ids)")
    for p in (man, tr, te):
        os.replace(p.with_suffix(".tmp"), p)
    if n == 0:
        raise MMRBenchError(f"{out}: the build has no samples")
    sha = file_sha256(man)
    report = BuildReport(out=out, manifest=man, sha256=sha, samples=n, per_source=per_source,
                         dropped_categories=leaks, resumed_parts=resumed, seconds=time.perf_counter() - t0)
    info = {"manifest": "manifest.jsonl", "sha256": sha, "samples": n, "holdout": list(holdout),
            "train_sources": sorted(s for s in per_source if s not in holdout),
            "test_sources": sorted(s for s in per_source if s in holdout),
            "sample": sample, "reference": reference, "seed": seed, "dropped_categories": leaks,
            "per_source": per_source, "train": {"file": "train.jsonl", "sha256": file_sha256(tr)},
            "test": {"file": "test.jsonl", "sha256": file_sha256(te)}}
    (out / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report
