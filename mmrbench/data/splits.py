"""Cross-dataset (general AD) splits: train on some subdatasets, evaluate on held-out ones.

MMR-AD's protocol evaluates on subdatasets (MVTecAD, VisA, MVTec3D, MPDD) whose categories the
model never saw in training; the general-AD comparisons generalise it to any disjoint train and
test source sets and to leave-one-source-out. ``holdout_split`` produces:

* ``train.jsonl``: every sample (train and test split) of the non-held-out subdatasets;
* ``test.jsonl``: every sample of the held-out subdatasets: their test split (what is scored) and
  their normal training images (kept so that full-shot detectors can fit per category and so that
  references resolve; the scorer reads only ``split == "test"``). ``test_only=True`` drops them.

Leakage: a category *name* on both sides (compared case-insensitively, ignoring ``_``/``-``/spaces,
so ``cable_gland`` == ``Cable Gland``) means the model could train on the very product it is tested
on. By default that is an error; ``on_leak="drop"`` removes those categories from the training side
(the test side is never changed) and records them in ``split.json``.

Views of one object (a ``group`` id: Real-IAD cameras, MANTA panels) on both sides is an error.

Paths are rewritten relative to the output folder, so the new manifests stay valid wherever they
are written. Training samples without a reference (normal training images) get one: another normal
training image of the same category (never itself), chosen by reference retrieval by default.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from mmrbench.data.manifest import Manifest, write_manifest
from mmrbench.data.schema import Sample
from mmrbench.errors import MMRBenchError

LEAK_POLICIES = ("error", "drop")
TRAIN_REFERENCE_METHODS = ("retrieval", "random", "first", "none")


class SplitError(MMRBenchError):
    pass


def category_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


@dataclass
class Split:
    name: str
    holdout: list[str]
    train: list[Sample]
    test: list[Sample]
    dropped_categories: list[str] = field(default_factory=list)


def holdout_split(manifest: Manifest, holdout: Sequence[str], *, on_leak: str = "error", test_only: bool = False,
                  name: str = "holdout", train: Sequence[str] | None = None) -> Split:
    """Partition ``manifest`` into training sources and held-out evaluation subdatasets.

    ``train`` restricts the training side to those subdatasets (default: every one not held out),
    so any pair of disjoint source sets is a split.
    """
    if on_leak not in LEAK_POLICIES:
        raise SplitError(f"unknown leakage policy '{on_leak}' (expected one of {', '.join(LEAK_POLICIES)})")
    subs = set(manifest.subdatasets)
    unknown = [h for h in list(holdout) + list(train or []) if h not in subs]
    if unknown:
        raise SplitError(f"subdataset(s) not in the manifest: {', '.join(unknown)} (have: {', '.join(sorted(subs))})")
    if not holdout:
        raise SplitError("no held-out subdataset given")
    hold = set(holdout)
    both = sorted(hold & set(train or []))
    if both:
        raise SplitError(f"subdataset(s) on both sides: {', '.join(both)}")
    train_set = set(train) if train else subs - hold
    test = [s for s in manifest if s.subdataset in hold and (not test_only or s.split == "test")]
    train_samples = [s for s in manifest if s.subdataset in train_set]
    if not any(s.split == "test" for s in test):
        raise SplitError(f"the held-out subdatasets {', '.join(holdout)} have no test samples")
    test_keys = {category_key(s.category): f"{s.subdataset}/{s.category}" for s in test}
    leaks = sorted({f"{s.subdataset}/{s.category} (held out: {test_keys[category_key(s.category)]})"
                    for s in train_samples if category_key(s.category) in test_keys})
    dropped: list[str] = []
    if leaks:
        if on_leak == "error":
            raise SplitError(f"category leakage between train and test: {'; '.join(leaks)} "
                             "(rename the category or use --on-leak drop to remove it from training)")
        dropped = leaks
        train_samples = [s for s in train_samples if category_key(s.category) not in test_keys]
    groups = {s.extra.get("group") for s in test} - {None}
    shared = sorted({str(s.extra["group"]) for s in train_samples if s.extra.get("group") in groups})
    if shared:
        raise SplitError(f"view leakage: object(s) {', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''} "
                         "have views on both sides")
    if not train_samples:
        raise SplitError(f"nothing left to train on after holding out {', '.join(holdout)}")
    return Split(name=name, holdout=list(holdout), train=train_samples, test=test, dropped_categories=dropped)


def leave_one_out(manifest: Manifest, sources: Sequence[str] | None = None, **kw) -> list[Split]:
    """One split per source (subdataset): train on the others of ``sources`` (default: all), test on it."""
    subs = list(sources) if sources else manifest.subdatasets
    if len(subs) < 2:
        raise SplitError("leave-one-out needs at least two subdatasets")
    return [holdout_split(manifest, [s], name=s, train=[t for t in subs if t != s], **kw) for s in subs]


def _rebase(s: Sample, src_root: Path, out: Path) -> Sample:
    def rel(p: str) -> str:
        return Path(os.path.relpath((src_root / p).resolve(), out.resolve())).as_posix()

    def rel_opt(p: str | None) -> str | None:
        return None if p is None else rel(p)

    return replace(s, image=rel(s.image), reference=rel_opt(s.reference), mask=rel_opt(s.mask))


def assign_train_references(samples: list[Sample], root: Path, method: str = "retrieval", seed: int = 0) -> list[Sample]:
    """Give every sample without a reference another normal training image of its category."""
    if method == "none":
        return samples
    if method not in TRAIN_REFERENCE_METHODS:
        raise SplitError(f"unknown reference method '{method}' (expected one of {', '.join(TRAIN_REFERENCE_METHODS)})")
    rng = np.random.default_rng(seed)
    out = list(samples)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.subdataset, s.category), []).append(i)
    for _, idx in groups.items():
        normals = [i for i in idx if samples[i].split == "train" and samples[i].label == "normal"]
        need = [i for i in idx if samples[i].reference is None]
        if not need or not normals:
            continue
        pos = {i: k for k, i in enumerate(normals)}
        if method == "retrieval":
            from mmrbench.data.importers.common import load_for_retrieval
            from mmrbench.data.retrieval import ReferenceRetriever

            imgs = {i: load_for_retrieval(root / samples[i].image) for i in set(normals) | set(need)}
            r = ReferenceRetriever.fit([imgs[i] for i in normals], seed=int(rng.integers(0, 2**31 - 1)))
            nbs = r.query_many([imgs[i] for i in need], exclude=[pos.get(i) for i in need])
            picks = [normals[int(nb.indices[0])] if len(nb.indices) else None for nb in nbs]
        else:
            picks = []
            for i in need:
                cands = [j for j in normals if j != i]
                if not cands:
                    picks.append(None)
                elif method == "first":
                    picks.append(cands[0])
                else:
                    picks.append(cands[int(rng.integers(0, len(cands)))])
        for i, j in zip(need, picks):
            if j is not None:
                out[i] = replace(samples[i], reference=samples[j].image)
    return out


@dataclass
class SplitFiles:
    name: str
    train: Path
    test: Path
    info: Path


def write_split(split: Split, manifest: Manifest, out_dir, *, train_references: str = "retrieval",
                seed: int = 0) -> SplitFiles:
    """Write ``train.jsonl``, ``test.jsonl`` and ``split.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = assign_train_references(split.train, manifest.root, train_references, seed)
    train = [_rebase(s, manifest.root, out) for s in train]
    test = [_rebase(s, manifest.root, out) for s in split.test]
    tr_sha = write_manifest(out / "train.jsonl", train)
    te_sha = write_manifest(out / "test.jsonl", test)

    def counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
        c: dict[str, dict[str, int]] = {}
        for s in samples:
            d = c.setdefault(s.subdataset, {"categories": 0, "train": 0, "test_normal": 0, "test_anomalous": 0})
            d["train" if s.split == "train" else ("test_anomalous" if s.is_anomalous else "test_normal")] += 1
        for sub in c:
            c[sub]["categories"] = len({s.category for s in samples if s.subdataset == sub})
        return c

    info = {
        "name": split.name,
        "source_manifest": Path(os.path.relpath(manifest.path, out.resolve())).as_posix(),
        "source_manifest_sha256": manifest.sha256,
        "holdout": split.holdout,
        "train_subdatasets": sorted({s.subdataset for s in train}),
        "dropped_categories": split.dropped_categories,
        "train_references": train_references,
        "train": {"file": "train.jsonl", "sha256": tr_sha, "samples": len(train), "counts": counts(train)},
        "test": {"file": "test.jsonl", "sha256": te_sha, "samples": len(test), "counts": counts(test)},
    }
    (out / "split.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return SplitFiles(split.name, out / "train.jsonl", out / "test.jsonl", out / "split.json")
