"""``data build``: fourteen miniature sources -> one manifest with the paper's split, no category or
view leakage, references from each category's own training normals, resumable, sampled."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import source_trees as T  # noqa: E402

from mmrbench.cli import main  # noqa: E402
from mmrbench.data.build import PAPER_HOLDOUT, build, read_sources  # noqa: E402
from mmrbench.data.manifest import read_manifest  # noqa: E402
from mmrbench.data.splits import category_key  # noqa: E402
from mmrbench.errors import ConfigError, MMRBenchError  # noqa: E402


def write_sources(tmp: Path, names=None, extra: dict | None = None) -> Path:
    lines = []
    for name, (fmt, builder) in T.ALL.items():
        if names is not None and name not in names:
            continue
        root = tmp / "data" / name
        if not root.exists():
            builder(root)
        lines.append(f'["{name}"]\nroot = "data/{name}"')
        for k, v in (extra or {}).get(name, {}).items():
            lines.append(f"{k} = {json.dumps(v)}")
    f = tmp / "SOURCES.toml"
    f.write_text("\n".join(lines) + "\n")
    return f


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build14")
    rep = build(write_sources(tmp), tmp / "out", reference="retrieval")
    return tmp, rep


def test_fourteen_sources_give_the_paper_split(built):
    tmp, rep = built
    m = read_manifest(rep.manifest, check_files=True)
    assert m.subdatasets == sorted(T.ALL)
    train = read_manifest(tmp / "out" / "train.jsonl", check_files=True)
    test = read_manifest(tmp / "out" / "test.jsonl", check_files=True)
    assert sorted(test.subdatasets) == sorted(PAPER_HOLDOUT)
    assert sorted(train.subdatasets) == sorted(set(T.ALL) - set(PAPER_HOLDOUT))
    assert len(train) + len(test) == len(m)
    assert {s.extra["gad_split"] for s in test} == {"test"} and {s.extra["gad_split"] for s in train} == {"train"}
    # no category leakage
    assert not {category_key(s.category) for s in train} & {category_key(s.category) for s in test}
    # no view leakage: a group on one side only, and in one within-source split
    tr_groups = {s.extra["group"] for s in train if "group" in s.extra}
    te_groups = {s.extra["group"] for s in test if "group" in s.extra}
    assert tr_groups and not tr_groups & te_groups
    for g in tr_groups:
        assert len({s.split for s in train if s.extra.get("group") == g}) == 1
    info = json.loads((tmp / "out" / "build.json").read_text())
    assert info["test_sources"] == sorted(PAPER_HOLDOUT) and info["dropped_categories"] == []
    assert info["per_source"]["MANTA"]["samples"] == 20 and info["per_source"]["RealIAD"]["samples"] == 10
    assert main(["data", "check", str(rep.manifest), "--boxes"]) == 0  # every file decodes, boxes match masks


def test_every_sample_has_a_reference_from_its_own_category(built):
    _, rep = built
    m = read_manifest(rep.manifest)
    by_image = {s.image: s for s in m}
    for s in m:
        assert s.reference is not None, s.id
        assert s.reference != s.image
        ref = by_image.get(s.reference)
        if ref is None:  # MANTA crops and the like are samples; everything else must be too here
            pytest.fail(f"{s.id}: reference {s.reference} is not a sample")
        assert (ref.subdataset, ref.category, ref.split, ref.label) == (s.subdataset, s.category, "train", "normal")
        if "group" in s.extra:
            assert ref.extra.get("group") != s.extra["group"]


def test_build_resumes_and_is_deterministic(built, tmp_path):
    tmp, rep = built
    shutil.copytree(tmp, tmp_path / "copy")  # data, sources file and build move together
    out = tmp_path / "copy" / "out"
    # an interrupted build: one category part and the final files missing
    victim = next((out / "parts" / "RealIAD").glob("*.jsonl"))
    victim.unlink()
    for f in ("manifest.jsonl", "train.jsonl", "test.jsonl"):
        (out / f).unlink()
    # same sources file (its relative roots resolve to the same data)
    (out / "build_state.json").write_text((out / "build_state.json").read_text().replace(str(tmp), str(tmp_path / "copy")))
    rep2 = build(tmp_path / "copy" / "SOURCES.toml", out, reference="retrieval")
    assert rep2.sha256 == rep.sha256
    assert rep2.resumed_parts == sum(1 for _ in (out / "parts").glob("*/*.jsonl")) - 1


def test_other_settings_refuse_to_mix(built):
    tmp, _ = built
    with pytest.raises(MMRBenchError, match="holds a build with other settings"):
        build(tmp / "SOURCES.toml", tmp / "out", reference="first")


def test_sample_keeps_whole_objects_to_the_count(tmp_path):
    src = write_sources(tmp_path, names={"RealIAD", "MANTA", "GoodsAD"},
                        extra={"RealIAD": {"sample": 4}, "MANTA": {"sample": 7}})
    rep = build(src, tmp_path / "out", reference="first", sample="paper", seed=3)
    m = read_manifest(rep.manifest)
    n = {sub: len(m.select(subdatasets=[sub])) for sub in m.subdatasets}
    # GoodsAD (4 images) has fewer than Table 1's 2028: all kept; RealIAD's empty-mask image is no candidate
    assert n["RealIAD"] == 4 and n["MANTA"] == 7 and n["GoodsAD"] == 4
    assert rep.per_source["GoodsAD"]["available"] == 4 and rep.per_source["RealIAD"]["available"] == 10
    manta_groups = [s.extra["group"] for s in m.select(subdatasets=["MANTA"])]
    # 7 = one whole montage (5 views) + 2 views of the next
    assert sorted(manta_groups.count(g) for g in set(manta_groups)) == [2, 5]
    # the sample is stable across a rebuild with the same seed
    rep2 = build(src, tmp_path / "out2", reference="first", sample="paper", seed=3)
    assert rep2.sha256 == rep.sha256


def test_leaking_category_is_dropped_or_fails(tmp_path):
    src = write_sources(tmp_path, names={"MVTecAD", "GoodsAD"})
    T.goodsad(tmp_path / "data" / "GoodsAD", cat="Bottle")  # same product name as MVTec AD's 'bottle'
    rep = build(src, tmp_path / "out", reference="first")
    assert rep.dropped_categories == ["GoodsAD/Bottle (held out: MVTecAD/bottle)"]
    assert "Bottle" not in {s.category for s in read_manifest(rep.manifest)}
    with pytest.raises(MMRBenchError, match="category leakage"):
        build(src, tmp_path / "out2", reference="first", on_leak="error")


def test_sources_file_errors_are_one_line(tmp_path):
    f = tmp_path / "S.toml"
    for text, msg in [('[Foo]\nroot = "x"\n', r"\[Foo\]: unknown source"),
                      ('[MIAD]\nformat = "nope"\nroot = "x"\n', "field 'format': unknown format 'nope'"),
                      ('[MIAD]\n', "field 'root'"),
                      ('[MIAD]\nroot = "x"\nresolution = "1024"\n', r"unknown field\(s\) resolution"),
                      ('[RealIAD]\nroot = "x"\nsample = 0\n', "field 'sample'"),
                      ("[oops", "not valid TOML")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=msg) as e:
            read_sources(f)
        assert "\n" not in str(e.value)
    f.write_text('[MyCables]\nformat = "cableinspect"\nroot = "c"\n[sources]\n')
    with pytest.raises(ConfigError):
        read_sources(f)


def test_cli_build(tmp_path, capsys):
    src = write_sources(tmp_path, names={"MPDD", "WFDD"})
    assert main(["data", "build", "--sources", str(src), "--out", str(tmp_path / "out"), "--reference", "first"]) == 0
    out = capsys.readouterr().out
    assert "WFDD" in out and "train" in out and "manifest:" in out
    assert main(["data", "build", "--sources", str(src), "--out", str(tmp_path / "out"), "--reference", "first"]) == 0
    assert "resumed: 2 finished categories reused" in capsys.readouterr().out
    assert main(["data", "build", "--sources", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")]) == 2


def test_built_manifest_splits_leave_one_source_out(built):
    from mmrbench.data.splits import leave_one_out

    _, rep = built
    m = read_manifest(rep.manifest)
    sps = leave_one_out(m)
    assert [sp.name for sp in sps] == sorted(T.ALL)
    for sp in sps:
        assert {s.subdataset for s in sp.test} == {sp.name}
        assert not {s.extra.get("group") for s in sp.train} & ({s.extra.get("group") for s in sp.test} - {None})
