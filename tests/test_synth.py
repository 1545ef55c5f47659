"""The bundled synthetic benchmark: determinism, contents, and manifest consistency."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrbench.cli import main
from mmrbench.data.manifest import file_sha256, read_manifest
from mmrbench.data.masks import boxes_from_mask
from mmrbench.data.synth import generate
from mmrbench.errors import MMRBenchError


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    cats = ["cable", "carpet", "pcb"]
    a = generate(tmp_path / "a", seed=3, scale="small", categories=cats)
    b = generate(tmp_path / "b", seed=3, scale="small", categories=cats)
    ta, tb = _tree_bytes(a.parent), _tree_bytes(b.parent)
    assert ta.keys() == tb.keys() and len(ta) > 30
    assert all(ta[k] == tb[k] for k in ta)
    c = generate(tmp_path / "c", seed=4, scale="small", categories=cats)
    assert file_sha256(c) != file_sha256(a)


def test_benchmark_contents(synth_small):
    m = read_manifest(synth_small, check_files=True)
    info = json.loads((m.root / "info.json").read_text())
    assert info["manifest_sha256"] == m.sha256 == file_sha256(synth_small)
    subs = {s.subdataset for s in m}
    assert len(subs) >= 5 and {"SynMVTecAD", "SynVisA", "SynMVTec3D", "SynMPDD"} <= subs
    cats = {(s.subdataset, s.category) for s in m}
    assert len(cats) >= 12
    assert len({c for _, c in cats}) == len(cats), "category names must be unique across subdatasets"
    for sub in info["held_out"]:
        assert len({c for s, c in cats if s == sub}) >= 3
    types = {b.label for s in m for b in s.boxes}
    assert len(types) >= 6 and {"scratch", "hole", "stain", "crack", "missing component",
                                "swapped components", "deformation", "contamination", "broken"} <= types
    assert all(s.width >= 256 and s.height >= 256 for s in m)
    per_cat = {}
    for s in m:
        k = per_cat.setdefault(s.category, {"train": 0, "good": 0, "bad": 0})
        k["train" if s.split == "train" else ("bad" if s.is_anomalous else "good")] += 1
    assert all(v == {"train": 8, "good": 3, "bad": 4} for v in per_cat.values()), per_cat
    assert any(len(s.boxes) >= 2 for s in m)


def test_references_are_train_normals_of_the_same_category(synth_small):
    m = read_manifest(synth_small)
    train = {s.image: s for s in m if s.split == "train"}
    for s in m:
        if s.split == "train":
            assert s.reference is None and s.label == "normal"
        else:
            assert s.reference in train
            ref = train[s.reference]
            assert (ref.subdataset, ref.category, ref.label) == (s.subdataset, s.category, "normal")


def test_boxes_are_the_mask_components(synth_small):
    m = read_manifest(synth_small)
    n = 0
    for s in m.select(split="test"):
        if not s.is_anomalous:
            assert s.mask is None and not s.boxes
            continue
        mask = np.asarray(Image.open(m.resolve(s.mask)))
        assert mask.shape == (s.height, s.width) and set(np.unique(mask)) <= {0, 255}
        assert [b.xyxy for b in boxes_from_mask(mask)] == [b.xyxy for b in s.boxes]
        for b in s.boxes:
            side = max(b.x2 - b.x1, b.y2 - b.y1)
            # local defects stay small; a whole missing/swapped part (a cable conductor) is larger
            limit = 0.32 if b.label in ("missing component", "swapped components") else 0.25
            assert 6 <= side <= limit * s.width, (s.id, b)
            assert mask[int(b.y1):int(b.y2), int(b.x1):int(b.x2)].any()
        n += 1
    assert n == 16 * 4


def test_normals_vary_and_anomalies_change_pixels(synth_small):
    m = read_manifest(synth_small)
    tr = [np.asarray(Image.open(m.resolve(s.image)), np.float32) for s in m.select(split="train", categories=["screw"])]
    diffs = [np.abs(tr[i] - tr[j]).mean() for i in range(len(tr)) for j in range(i + 1, len(tr))]
    assert min(diffs) > 3.0  # every pair of normals differs visibly (pose, lighting, noise)
    for s in m.select(split="test"):
        if not s.is_anomalous:
            continue
        img = np.asarray(Image.open(m.resolve(s.image)).convert("L"), np.float32)
        mask = np.asarray(Image.open(m.resolve(s.mask))) > 0
        ring = np.zeros_like(mask)
        for b in s.boxes:  # the defect differs from its immediate surroundings
            x1, y1, x2, y2 = (int(v) for v in b.xyxy)
            ring[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = True
        ring &= ~mask
        if s.boxes[0].label in ("swapped components", "missing component"):
            continue  # colour-level changes; checked by the detector benchmark instead
        assert abs(img[mask].mean() - img[ring].mean()) > 4 or img[mask].std() > 12, s.id


def test_cli_synth_prints_summary(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["data", "synth", "--out", str(out), "--scale", "small", "--categories", "pill,tile"]) == 0
    text = capsys.readouterr().out
    assert "SynVisA" in text and "SynExtra" in text and "sha256" in text
    m = read_manifest(out / "manifest.jsonl")
    assert {s.category for s in m} == {"pill", "tile"}
    # regenerating into the same folder replaces it (no stale files), a foreign folder is refused
    assert main(["data", "synth", "--out", str(out), "--scale", "small", "--categories", "pill"]) == 0
    assert not (out / "images" / "SynExtra").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["data", "synth", "--out", str(foreign), "--scale", "small"]) == 2
    assert (foreign / "notes.txt").read_text() == "mine"


def test_bad_arguments():
    with pytest.raises(MMRBenchError, match="unknown scale"):
        generate("/nonexistent/never", scale="huge")
    with pytest.raises(MMRBenchError, match="no known category"):
        generate("/nonexistent/never", categories=["unicorn"])


def test_the_reference_benchmark_is_what_this_opencv_draws(synth_small):
    """synth_small is seed 0 at the small scale: with the pinned OpenCV its manifest is the recorded
    reference one, and info.json names the OpenCV that drew it. (The default scale's reference is checked
    byte for byte against the shipped eval.json in test_reference_entry.)"""
    import cv2

    from mmrbench.data.synth import REFERENCE_MANIFESTS, SYNTH_VERSION, reference_mismatch

    info = json.loads((synth_small.parent / "info.json").read_text())
    assert info["opencv"] == cv2.__version__ and cv2.__version__.startswith("5.0.")
    assert info["manifest_sha256"] == REFERENCE_MANIFESTS[(SYNTH_VERSION, 0, "small")]
    assert reference_mismatch(info) is None


def test_the_package_pins_the_opencv_the_reference_needs():
    from mmrbench.data.synth import OPENCV_PIN

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"{OPENCV_PIN}"' in pyproject


def _default_info(**changes):
    from mmrbench.data.synth_categories import CATEGORIES, SUBDATASETS
    info = {"generator_version": "2", "seed": 0, "scale": "default", "manifest_sha256": "f" * 64, "opencv": "5.1.0",
            "reference": "retrieval",
            "categories": {s: [c.name for c in CATEGORIES if c.subdataset == s] for s in SUBDATASETS}}
    return {**info, **changes}


def test_a_benchmark_drawn_otherwise_is_named_as_not_the_reference():
    from mmrbench.data.synth import OPENCV_PIN, REFERENCE_MANIFESTS, reference_mismatch

    ref = REFERENCE_MANIFESTS[("2", 0, "default")]
    why = reference_mismatch(_default_info())
    assert why is not None and "OpenCV 5.1.0 drew it" in why and ref[:12] in why and "ffffffffffff" in why
    assert f"pip install '{OPENCV_PIN}'" in why
    assert reference_mismatch(_default_info(manifest_sha256=ref)) is None
    assert reference_mismatch(_default_info(seed=7)) is None  # no reference recorded for that seed: nothing to say
    # a benchmark asked to differ (another reference choice, a category subset) is not blamed on OpenCV
    assert reference_mismatch(_default_info(reference="random")) is None
    assert reference_mismatch(_default_info(categories={"SynMVTecAD": ["carpet"]})) is None


def test_bundled_warns_when_its_benchmark_is_not_the_reference_generated_or_reused(tmp_path, capsys, monkeypatch):
    from mmrbench.commands import bundled
    from mmrbench.data import synth

    monkeypatch.setitem(synth.REFERENCE_MANIFESTS, ("2", 0, "small"), "0" * 64)  # as if this OpenCV drew otherwise
    bundled.ensure_benchmark(tmp_path / "data", 0, "small", progress=False)
    out = capsys.readouterr()
    assert "generating" in out.out and "is not byte-identical to the reference" in out.err
    bundled.ensure_benchmark(tmp_path / "data", 0, "small", progress=False)  # a folder from an earlier run
    out = capsys.readouterr()
    assert "reusing" in out.out and "is not byte-identical to the reference" in out.err
    monkeypatch.undo()
    bundled.ensure_benchmark(tmp_path / "data", 0, "small", progress=False)
    assert capsys.readouterr().err == ""  # the reference benchmark: nothing to warn about


def test_data_synth_warns_only_for_the_full_benchmark(tmp_path, capsys, monkeypatch):
    from mmrbench.data import synth

    monkeypatch.setitem(synth.REFERENCE_MANIFESTS, ("2", 0, "small"), "0" * 64)
    assert main(["data", "synth", "--out", str(tmp_path / "sub"), "--scale", "small", "--categories", "carpet"]) == 0
    assert "warning" not in capsys.readouterr().err  # a subset differs by design
    assert main(["data", "synth", "--out", str(tmp_path / "all"), "--scale", "small"]) == 0
    assert "is not byte-identical to the reference" in capsys.readouterr().err
