"""The ten newer MMR-AD sources: a miniature tree per source in its documented layout, with the
quirks LAYOUTS.md records, imported and checked sample by sample (split, label, boxes, types)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import source_trees as T  # noqa: E402

from mmrbench.cli import main  # noqa: E402
from mmrbench.data.importers import import_dataset  # noqa: E402
from mmrbench.data.importers.common import ImportFormatError  # noqa: E402
from mmrbench.data.manifest import read_manifest  # noqa: E402


def table(manifest):
    """id -> (category, split, label, ((x1, y1, x2, y2, type), ...)) for exact comparison."""
    return {s.id: (s.category, s.split, s.label, tuple((*map(int, b.xyxy), b.label) for b in s.boxes)) for s in manifest}


def imp(fmt, root, out, **kw):
    rep = import_dataset(fmt, root, out, reference=kw.pop("reference", "first"), **kw)
    return rep, read_manifest(rep.manifest, check_files=True)


def test_loco_types_from_pixel_values_and_region_folders(tmp_path):
    _, m = imp("loco", T.loco(tmp_path / "src"), tmp_path / "out")
    p = "MVTecLOCO/breakfast_box"
    assert table(m) == {
        f"{p}/train/good/000": ("breakfast_box", "train", "normal", ()),
        f"{p}/train/good/001": ("breakfast_box", "train", "normal", ()),
        f"{p}/validation/good/000": ("breakfast_box", "train", "normal", ()),
        f"{p}/test/good/000": ("breakfast_box", "test", "normal", ()),
        # region 000 (value 255, one component), region 001 (value 245, two components)
        f"{p}/test/logical_anomalies/000": ("breakfast_box", "test", "anomalous",
                                            ((2, 2, 10, 8, "missing banana"), (35, 5, 45, 15, "wrong ratio"),
                                             (20, 20, 26, 30, "wrong ratio"))),
        f"{p}/test/structural_anomalies/000": ("breakfast_box", "test", "anomalous", ((10, 30, 20, 40, "box damaged"),)),
    }
    assert m.get(f"{p}/test/logical_anomalies/000").extra["anomaly_kind"] == "logical"
    assert m.get(f"{p}/validation/good/000").extra["source_split"] == "validation"


def test_loco_unknown_pixel_value_is_one_line(tmp_path):
    root = T.loco(tmp_path / "src")
    T.mask(root / "breakfast_box" / "ground_truth" / "structural_anomalies" / "000" / "000.png", [(1, 1, 9, 9)], value=200)
    with pytest.raises(ImportFormatError, match=r"pixel value 200 is not in .*defects_config.json \(known: 234=box_damaged"):
        imp("loco", root, tmp_path / "out")


def test_goodsad_jpg_images_with_png_masks(tmp_path):
    _, m = imp("goodsad", T.goodsad(tmp_path / "src"), tmp_path / "out")
    p = "GoodsAD/drink_can"
    assert table(m) == {
        f"{p}/train/good/003_000": ("drink_can", "train", "normal", ()),
        f"{p}/train/good/003_001": ("drink_can", "train", "normal", ()),
        f"{p}/test/good/005_000": ("drink_can", "test", "normal", ()),
        f"{p}/test/surface_damage/005_001": ("drink_can", "test", "anomalous",
                                             ((4, 4, 12, 10, "surface damage"), (30, 30, 40, 44, "surface damage"))),
    }
    s = m.get(f"{p}/test/surface_damage/005_001")
    assert s.image.endswith("005_001.jpg") and s.mask.endswith("ground_truth/surface_damage/005_001.png")


@pytest.mark.parametrize("nested", [False, True], ids=["flat-jsons", "nested-jsons"])
def test_realiad_trusts_the_json_and_groups_views(tmp_path, nested):
    rep, m = imp("realiad", T.realiad(tmp_path / "src", nested_json=nested), tmp_path / "out")
    p = "RealIAD/audiojack/audiojack"
    assert table(m) == {
        f"{p}_0001_OK_C1_202309211": ("audiojack", "train", "normal", ()),
        f"{p}_0001_OK_C2_202309212": ("audiojack", "train", "normal", ()),
        f"{p}_0002_OK_C1_202309221": ("audiojack", "train", "normal", ()),
        f"{p}_0002_OK_C2_202309222": ("audiojack", "train", "normal", ()),
        f"{p}_0003_NG_BX_C1_20230923": ("audiojack", "test", "anomalous",
                                        ((4, 4, 12, 10, "deformation"), (30, 30, 40, 44, "deformation"))),
        # under NG/ but the JSON says OK: normal, no mask
        f"{p}_0003_NG_BX_C2_20230923": ("audiojack", "test", "normal", ()),
        # doubled underscore in the file name
        f"{p}__0004_NG_HS_C1_20230924": ("audiojack", "test", "anomalous", ((4, 4, 12, 10, "scratch"),)),
        f"{p}__0004_NG_HS_C2_20230924": ("audiojack", "test", "anomalous", ((20, 20, 30, 26, "scratch"),)),
        # listed in train by the JSON, but its other view is in test: the object goes to test whole
        f"{p}_0006_OK_C1_20230926": ("audiojack", "test", "normal", ()),
        f"{p}_0006_OK_C2_20230926": ("audiojack", "test", "normal", ()),
    }
    # the PS object's mask is empty: skipped and reported
    assert [Path(s).name for s in rep.skipped] == ["audiojack_0005_NG_PS_C1_20230925.jpg"]
    groups = {s.id.rsplit("/", 1)[1]: s.extra["group"] for s in m}
    assert groups["audiojack__0004_NG_HS_C1_20230924"] == groups["audiojack__0004_NG_HS_C2_20230924"] \
        == "RealIAD/audiojack/audiojack_0004_NG_HS"
    assert groups["audiojack_0003_NG_BX_C1_20230923"] == groups["audiojack_0003_NG_BX_C2_20230923"]
    assert m.get(f"{p}_0003_NG_BX_C1_20230923").extra["view"] == "C1"
    assert m.get(f"{p}_0003_NG_BX_C1_20230923").extra["defect_code"] == "BX"
    for g in set(groups.values()):
        assert len({s.split for s in m if s.extra["group"] == g}) == 1


def test_realiad_other_json_sets(tmp_path):
    root = T.realiad(tmp_path / "src", nested_json=True)
    sv = root / "realiad_jsons" / "realiad_jsons_sv"
    sv.mkdir()
    d = json.loads((root / "realiad_jsons" / "realiad_jsons" / "audiojack.json").read_text())
    d["test"] = [e for e in d["test"] if "_C1_" in e["image_path"]]  # a single-view set
    d["train"] = [e for e in d["train"] if "_C1_" in e["image_path"]]
    (sv / "audiojack.json").write_text(json.dumps(d))
    _, m = imp("realiad", root, tmp_path / "out", json_dir="realiad_jsons_sv")
    assert {s.extra["view"] for s in m} == {"C1"} and len(m) == 5  # 3 train C1 + 2 test C1 (PS: empty mask)
    with pytest.raises(ImportFormatError, match="no JSON folder realiad_jsons_x"):
        imp("realiad", root, tmp_path / "out2", json_dir="realiad_jsons_x")


def test_realiad_resolution_choice(tmp_path):
    root = T.realiad(tmp_path / "src")
    with pytest.raises(ImportFormatError, match="no image folder realiad_512"):
        imp("realiad", root, tmp_path / "out", resolution="512")
    shutil.copytree(root / "realiad_1024", root / "realiad_256")
    _, m = imp("realiad", root, tmp_path / "out2", resolution="256")
    assert all("realiad_256" in s.image for s in m)


def test_realiad_d3_hyphens_validation_and_codes(tmp_path):
    _, m = imp("realiad-d3", T.realiad_d3(tmp_path / "src"), tmp_path / "out")
    p = "RealIAD-D3/limit_switch"
    assert table(m) == {
        f"{p}/train/limit-switch/OK/0000/rgb": ("limit_switch", "train", "normal", ()),
        f"{p}/train/limit-switch/OK/0001/rgb": ("limit_switch", "train", "normal", ()),
        f"{p}/validation/limit-switch/OK/0009/rgb": ("limit_switch", "train", "normal", ()),
        f"{p}/test/limit-switch/OK/0010/rgb": ("limit_switch", "test", "normal", ()),
        f"{p}/test/limit-switch/NG/AK/0011/rgb": ("limit_switch", "test", "anomalous", ((4, 4, 12, 10, "pit"),)),
    }


def test_realiad_d3_official_folder_layout(tmp_path):
    _, m = imp("realiad-d3", T.realiad_d3_folders(tmp_path / "src"), tmp_path / "out")
    p = "RealIAD-D3/knob_cap"
    assert table(m) == {
        f"{p}/train/GOOD/0000/knob-cap_0000_L05_RGB": ("knob_cap", "train", "normal", ()),
        f"{p}/train/GOOD/0001/knob-cap_0001_L05_RGB": ("knob_cap", "train", "normal", ()),
        f"{p}/test/GOOD/0000/knob-cap_0000_L05_RGB": ("knob_cap", "test", "normal", ()),
        # masks in gt/rgb/ paired with the samples in sorted order
        f"{p}/test/scratch/0000/knob-cap_0000_L05_RGB": ("knob_cap", "test", "anomalous", ((4, 4, 12, 10, "scratch"),)),
        f"{p}/test/scratch/0001/knob-cap_0001_L05_RGB": ("knob_cap", "test", "anomalous", ((20, 20, 30, 30, "scratch"),)),
    }
    (tmp_path / "src" / "knob-cap" / "test" / "scratch" / "gt" / "rgb" / "0001.png").unlink()
    with pytest.raises(ImportFormatError, match=r"expected one mask in gt/rgb/ per sample \(2\); found 1"):
        imp("realiad-d3", tmp_path / "src", tmp_path / "out2")


@pytest.mark.parametrize("stacked", [False, True], ids=["side-by-side", "stacked"])
def test_manta_one_sample_per_view(tmp_path, stacked):
    _, m = imp("manta", T.manta(tmp_path / "src", stacked=stacked), tmp_path / "out")
    assert len(m) == 4 * 5 and all((s.width, s.height) == (32, 32) for s in m)
    p = "MANTA/electronics/led/test/scratch/0"
    got = {s.id: (s.label, tuple((*map(int, b.xyxy), b.label) for b in s.boxes)) for s in m if s.id.startswith(p)}
    assert got == {
        f"{p}/v1": ("normal", ()), f"{p}/v2": ("anomalous", ((4, 4, 12, 10, "scratch"),)),
        f"{p}/v3": ("normal", ()), f"{p}/v4": ("anomalous", ((20, 20, 28, 30, "scratch"),)), f"{p}/v5": ("normal", ()),
    }
    assert {s.extra["group"] for s in m if s.id.startswith(p)} == {p}
    assert m.get(f"{p}/v1").extra["montage_label"] == "anomalous"
    assert {s.extra["domain"] for s in m} == {"electronics"} and {s.category for s in m} == {"led"}
    # the panel really is the view: its pixels equal the montage's
    import numpy as np
    from PIL import Image
    mont = np.asarray(Image.open(tmp_path / "src/electronics/led/test/scratch/0.png"))
    view = np.asarray(Image.open(m.resolve(m.get(f"{p}/v4").image)))
    assert (view == (mont[96:128, :] if stacked else mont[:, 96:128])).all()
    assert sorted(s.split for s in m).count("train") == 10


def test_manta_rejects_non_montage(tmp_path):
    root = T.goodsad(tmp_path / "src")  # 48x48 single views
    with pytest.raises(ImportFormatError, match=r"expected a montage of 5 square views .* found a 48x48 image"):
        imp("manta", root, tmp_path / "out")


def test_miad_doubled_folder_and_mask_suffix(tmp_path):
    _, m = imp("miad", T.miad(tmp_path / "src"), tmp_path / "out")
    p = "MIAD/witness_mark"
    assert table(m) == {
        f"{p}/train/good/000000": ("witness_mark", "train", "normal", ()),
        f"{p}/train/good/000001": ("witness_mark", "train", "normal", ()),
        f"{p}/test/good/000000": ("witness_mark", "test", "normal", ()),
        f"{p}/test/missing/000000": ("witness_mark", "test", "anomalous", ((4, 4, 12, 10, "missing"),)),
    }


def test_cableinspect_coco_boxes(tmp_path):
    _, m = imp("cableinspect", T.cableinspect(tmp_path / "src"), tmp_path / "out")
    p = "CableInspect/Cable_1/images"
    assert table(m) == {
        # pass 01 normals alternate train / test in file-name order; anomalous frames are test
        f"{p}/01/C01_A01_0000": ("Cable_1", "train", "normal", ()),
        f"{p}/01/C01_A01_0002": ("Cable_1", "test", "normal", ()),
        f"{p}/01/C01_A01_0003": ("Cable_1", "train", "normal", ()),
        # bbox [10, 5, 8, 4]; bbox [30, 10, 10, 4] rotated 90 degrees about its centre (35, 12)
        f"{p}/01/C01_A01_0001": ("Cable_1", "test", "anomalous", ((10, 5, 18, 9, "Bent strand"), (33, 7, 37, 17, "Deposit"))),
        # bbox [50.5, 20.2, 20, 10] clipped to the 64x36 image, outward-rounded
        f"{p}/02/C01_B02_0000": ("Cable_1", "test", "anomalous", ((50, 20, 64, 31, "Broken strands"),)),
    }
    assert m.get(f"{p}/01/C01_A01_0001").extra["anomaly_ids"] == ["001_01", "002_01"]


@pytest.mark.parametrize("odd", [False, True], ids=["same-stem", "paired-by-order"])
def test_wfdd(tmp_path, odd):
    _, m = imp("wfdd", T.wfdd(tmp_path / "src", odd_mask_names=odd), tmp_path / "out")
    p = "WFDD/grey_cloth"
    assert table(m) == {
        f"{p}/train/good/000": ("grey_cloth", "train", "normal", ()),
        f"{p}/train/good/001": ("grey_cloth", "train", "normal", ()),
        f"{p}/test/good/000": ("grey_cloth", "test", "normal", ()),
        f"{p}/test/hole/000": ("grey_cloth", "test", "anomalous", ((4, 4, 12, 10, "hole"),)),
        f"{p}/test/hole/001": ("grey_cloth", "test", "anomalous", ((20, 20, 30, 30, "hole"),)),
    }


def test_texturead(tmp_path):
    _, m = imp("texturead", T.texturead(tmp_path / "src"), tmp_path / "out")
    p = "TextureAD/cloth_plain"
    assert table(m) == {
        f"{p}/train/good/000": ("cloth_plain", "train", "normal", ()),
        f"{p}/train/good/001": ("cloth_plain", "train", "normal", ()),
        f"{p}/test/good/000": ("cloth_plain", "test", "normal", ()),
        f"{p}/test/defect/000": ("cloth_plain", "test", "anomalous", ((4, 4, 12, 10, "defect"), (30, 30, 40, 44, "defect"))),
    }


def test_3cad_canonical_category_spelling(tmp_path):
    _, m = imp("3cad", T.cad3(tmp_path / "src"), tmp_path / "out")
    p = "3CAD/Aluminum_Middle_Frame"
    assert table(m) == {
        f"{p}/train/good/000000": ("Aluminum_Middle_Frame", "train", "normal", ()),
        f"{p}/train/good/000001": ("Aluminum_Middle_Frame", "train", "normal", ()),
        f"{p}/test/good/000395": ("Aluminum_Middle_Frame", "test", "normal", ()),
        f"{p}/test/scratch/000396": ("Aluminum_Middle_Frame", "test", "anomalous", ((4, 4, 12, 10, "scratch"),)),
    }


def test_references_come_from_the_same_category_train_normals(tmp_path):
    root = T.goodsad(tmp_path / "src")
    T.goodsad(root, cat="food_box")
    _, m = imp("goodsad", root, tmp_path / "out", reference="retrieval")
    for s in m.select(split="test"):
        ref = m.resolve(s.reference)
        assert ref.parent == (root / s.category / "train" / "good").resolve()


# --------------------------------------------------------------------------- wrong roots: one line

NEW = ["loco", "goodsad", "realiad", "realiad-d3", "manta", "miad", "cableinspect", "wfdd", "texturead", "3cad"]
#: format -> a tree of another source to point it at
OTHER = {"loco": T.realiad, "goodsad": T.cableinspect, "realiad": T.loco, "realiad-d3": T.goodsad,
         "manta": T.cableinspect, "miad": T.realiad, "cableinspect": T.miad, "wfdd": T.realiad_d3,
         "texturead": T.cableinspect, "3cad": T.realiad}


@pytest.mark.parametrize("fmt", NEW)
def test_wrong_root_is_one_line_expected_vs_found(tmp_path, capsys, fmt):
    for k, root in enumerate([tmp_path / "missing", OTHER[fmt](tmp_path / "other")]):
        rc = main(["data", "import", fmt, str(root), "--out", str(tmp_path / f"o{k}"), "--reference", "first"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and "Traceback" not in err, err
        assert err.startswith("mmrbench: error: ") and "expected" in err and "found" in err, err


def test_error_names_the_dataset_it_found(tmp_path, capsys):
    main(["data", "import", "loco", str(T.realiad(tmp_path / "r")), "--out", str(tmp_path / "o")])
    assert "it looks like Real-IAD" in capsys.readouterr().err
    main(["data", "import", "realiad", str(T.loco(tmp_path / "l")), "--out", str(tmp_path / "o")])
    assert "it looks like MVTec LOCO AD" in capsys.readouterr().err


def test_cli_imports_a_new_source(tmp_path, capsys):
    root = T.cad3(tmp_path / "src")
    assert main(["data", "import", "3cad", str(root), "--out", str(tmp_path / "out"), "--reference", "first"]) == 0
    assert "Aluminum_Middle_Frame" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])["subdataset"] == "3CAD"
