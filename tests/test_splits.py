"""Cross-dataset splits: no category leakage, valid rebased paths, leave-one-out."""
from __future__ import annotations

import json

import pytest

from mmrbench.cli import main
from mmrbench.data.manifest import read_manifest, write_manifest
from mmrbench.data.schema import Sample
from mmrbench.data.splits import SplitError, category_key, holdout_split, leave_one_out, write_split

HELD = ["SynMVTecAD", "SynVisA", "SynMVTec3D", "SynMPDD"]


def test_holdout_split_of_the_synthetic_benchmark(synth_small, tmp_path):
    m = read_manifest(synth_small)
    sp = holdout_split(m, HELD)
    assert {s.subdataset for s in sp.train} == {"SynExtra"}
    assert {s.subdataset for s in sp.test} == set(HELD)
    assert len(sp.train) == len(m.select(subdatasets=["SynExtra"]))  # both splits of the source
    assert {s.split for s in sp.train} == {"train", "test"}
    assert len([s for s in sp.test if s.split == "test"]) == len(m.select(split="test", subdatasets=HELD))
    assert not {category_key(s.category) for s in sp.train} & {category_key(s.category) for s in sp.test}
    only = holdout_split(m, HELD, test_only=True)
    assert {s.split for s in only.test} == {"test"}

    out = tmp_path / "deep" / "split"
    files = write_split(sp, m, out, train_references="retrieval")
    tr = read_manifest(files.train, check_files=True)  # paths rewritten relative to the new folder
    te = read_manifest(files.test, check_files=True)
    assert len(tr) == len(sp.train) and len(te) == len(sp.test)
    # every training sample now has a reference: a normal train image of its category, never itself
    by_image = {s.image: s for s in tr}
    for s in tr:
        assert s.reference is not None and s.reference != s.image
        ref = by_image[s.reference]
        assert (ref.category, ref.split, ref.label) == (s.category, "train", "normal")
    # held-out samples keep exactly the references they had
    orig = {s.id: s for s in m}
    for s in te:
        assert (s.reference is None) == (orig[s.id].reference is None)
        if s.reference:
            assert te.resolve(s.reference) == m.resolve(orig[s.id].reference)
    info = json.loads(files.info.read_text())
    assert info["holdout"] == HELD and info["source_manifest_sha256"] == m.sha256
    assert info["train"]["sha256"] == tr.sha256 and info["test"]["sha256"] == te.sha256


def _s(sid, sub, cat, split="test", label="normal"):
    return Sample(id=sid, subdataset=sub, category=cat, split=split, image="x.png", label=label, width=8, height=8)


def _manifest(tmp_path, samples):
    (tmp_path / "x.png").write_bytes(b"")
    p = tmp_path / "m.jsonl"
    write_manifest(p, samples)
    return read_manifest(p, check_files=False)


def test_leakage_is_an_error_or_dropped(tmp_path):
    m = _manifest(tmp_path, [_s("a", "A", "cable_gland"), _s("b", "B", "Cable Gland"), _s("c", "B", "screw"),
                             _s("d", "A", "screw2")])
    with pytest.raises(SplitError, match=r"category leakage.*B/Cable Gland \(held out: A/cable_gland\)"):
        holdout_split(m, ["A"])
    sp = holdout_split(m, ["A"], on_leak="drop")
    assert [s.id for s in sp.train] == ["c"] and [s.id for s in sp.test] == ["a", "d"]
    assert sp.dropped_categories == ["B/Cable Gland (held out: A/cable_gland)"]
    with pytest.raises(SplitError, match="not in the manifest: Z"):
        holdout_split(m, ["Z"])
    with pytest.raises(SplitError, match="nothing left to train on"):
        holdout_split(m, ["A", "B"])


def test_leave_one_out_and_cli(synth_small, tmp_path, capsys):
    m = read_manifest(synth_small)
    sps = leave_one_out(m)
    assert [sp.name for sp in sps] == m.subdatasets
    for sp in sps:
        assert {s.subdataset for s in sp.test} == {sp.name}
        assert sp.name not in {s.subdataset for s in sp.train}
    out = tmp_path / "loo"
    assert main(["data", "split", str(synth_small), "--leave-one-out", "--out", str(out),
                 "--train-references", "first"]) == 0
    for sub in m.subdatasets:
        read_manifest(out / sub / "test.jsonl", check_files=True)
        read_manifest(out / sub / "train.jsonl", check_files=True)
    # default hold-out on the synthetic benchmark: the four Syn* evaluation subdatasets
    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "h"), "--train-references", "none"]) == 0
    assert json.loads((tmp_path / "h" / "split.json").read_text())["holdout"] == HELD
    capsys.readouterr()
    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "x"), "--holdout", "MVTecAD"]) == 2
    assert "not in the manifest: MVTecAD" in capsys.readouterr().err


def _g(sid, sub, cat, group, split="test"):
    s = _s(sid, sub, cat, split)
    s.extra["group"] = group
    return s


def test_any_train_and_test_source_sets(tmp_path):
    m = _manifest(tmp_path, [_s("a", "A", "a1"), _s("b", "B", "b1"), _s("c", "C", "c1"), _s("d", "D", "d1")])
    sp = holdout_split(m, ["C"], train=["A", "B"])
    assert [s.id for s in sp.train] == ["a", "b"] and [s.id for s in sp.test] == ["c"]  # D on neither side
    with pytest.raises(SplitError, match="on both sides: A"):
        holdout_split(m, ["A"], train=["A", "B"])
    with pytest.raises(SplitError, match="not in the manifest: Z"):
        holdout_split(m, ["C"], train=["Z"])
    # leave-one-source-out among a subset
    sps = leave_one_out(m, ["A", "B", "C"])
    assert [(sp.name, sorted({s.subdataset for s in sp.train})) for sp in sps] == [
        ("A", ["B", "C"]), ("B", ["A", "C"]), ("C", ["A", "B"])]


def test_view_groups_never_straddle(tmp_path):
    m = _manifest(tmp_path, [_g("a1", "A", "x", "obj1"), _g("a2", "A", "x", "obj2"), _g("b1", "B", "y", "obj1")])
    with pytest.raises(SplitError, match="view leakage: object\\(s\\) obj1 have views on both sides"):
        holdout_split(m, ["A"])


def test_cli_train_and_test_sets(synth_small, tmp_path):
    m = read_manifest(synth_small)
    out = tmp_path / "s"
    assert main(["data", "split", str(synth_small), "--train", "SynExtra", "--test", "SynVisA,SynMPDD",
                 "--out", str(out), "--train-references", "none"]) == 0
    info = json.loads((out / "split.json").read_text())
    assert info["holdout"] == ["SynVisA", "SynMPDD"] and info["train_subdatasets"] == ["SynExtra"]
    assert len(read_manifest(out / "test.jsonl")) == len(m.select(subdatasets=["SynVisA", "SynMPDD"]))
    assert main(["data", "split", str(synth_small), "--leave-one-source-out", "--train", "SynExtra,SynMPDD",
                 "--out", str(tmp_path / "loo"), "--train-references", "none"]) == 0
    assert sorted(p.name for p in (tmp_path / "loo").iterdir()) == ["SynExtra", "SynMPDD"]
    loo = json.loads((tmp_path / "loo" / "SynMPDD" / "split.json").read_text())
    assert loo["train_subdatasets"] == ["SynExtra"]
