"""Importers: tiny fake trees in each source layout -> valid manifests, one box per mask component."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrbench.cli import main
from mmrbench.data.importers import import_dataset
from mmrbench.data.importers.common import ImportFormatError
from mmrbench.data.manifest import read_manifest


def _img(path: Path, seed: int, size=(64, 64), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = (rng.random((size[1], size[0], 3)) * 60 + 100).astype(np.uint8)
    a[10:20, 10 + seed % 20:30 + seed % 20] = 30
    Image.fromarray(a).save(path, format=fmt)


def _mask(path: Path, rects, size=(64, 64), value=255):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    for x1, y1, x2, y2 in rects:
        m[y1:y2, x1:x2] = value
    Image.fromarray(m).save(path)


TWO = [(5, 5, 15, 12), (40, 30, 50, 60)]
ONE = [(20, 20, 31, 29)]


def _mvtec_tree(root: Path):
    for cat in ("bottle", "zipper"):
        for i in range(3):
            _img(root / cat / "train" / "good" / f"{i:03d}.png", i)
        _img(root / cat / "test" / "good" / "000.png", 10)
        _img(root / cat / "test" / "broken_large" / "000.png", 11)
        _img(root / cat / "test" / "broken_large" / "001.png", 12)
        _mask(root / cat / "ground_truth" / "broken_large" / "000_mask.png", TWO)
        _mask(root / cat / "ground_truth" / "broken_large" / "001_mask.png", ONE)
    return root


@pytest.mark.parametrize("fmt,sub", [("mvtec", "MVTecAD"), ("mpdd", "MPDD")])
def test_mvtec_and_mpdd_layout(tmp_path, fmt, sub):
    root = _mvtec_tree(tmp_path / "src")
    rep = import_dataset(fmt, root, tmp_path / "out", reference="retrieval")
    m = read_manifest(rep.manifest, check_files=True)
    assert len(m) == 12 and m.subdatasets == [sub]
    s = m.get(f"{sub}/bottle/test/broken_large/000")
    assert [b.xyxy for b in s.boxes] == [(5, 5, 15, 12), (40, 30, 50, 60)]
    assert {b.label for b in s.boxes} == {"broken large"}
    assert (s.width, s.height) == (64, 64) and s.mask.endswith("000_mask.png")
    assert [b.xyxy for b in m.get(f"{sub}/zipper/test/broken_large/001").boxes] == [(20, 20, 31, 29)]
    for t in m.select(split="test"):
        assert t.reference.startswith("../src/" + t.category + "/train/good/")
    assert all(t.reference is None for t in m.select(split="train"))
    assert s.image == "../src/bottle/test/broken_large/000.png"


def test_mvtec3d_layout(tmp_path):
    root = tmp_path / "src"
    for i in range(2):
        _img(root / "bagel" / "train" / "good" / "rgb" / f"{i:03d}.png", i)
    _img(root / "bagel" / "validation" / "good" / "rgb" / "000.png", 5)
    _img(root / "bagel" / "test" / "good" / "rgb" / "000.png", 6)
    _mask(root / "bagel" / "test" / "good" / "gt" / "000.png", [])
    _img(root / "bagel" / "test" / "crack" / "rgb" / "000.png", 7)
    _mask(root / "bagel" / "test" / "crack" / "gt" / "000.png", TWO + ONE)
    (root / "bagel" / "test" / "crack" / "xyz").mkdir()
    rep = import_dataset("mvtec3d", root, tmp_path / "out", reference="first")
    m = read_manifest(rep.manifest)
    assert len(m) == 5 and m.subdatasets == ["MVTec3D"]
    assert len(m.select(split="train")) == 3
    s = m.get("MVTec3D/bagel/test/crack/rgb/000")
    assert len(s.boxes) == 3 and all(b.label == "crack" for b in s.boxes)
    assert s.reference == "../src/bagel/train/good/rgb/000.png"


def test_visa_layout_with_defect_names(tmp_path):
    root = tmp_path / "src"
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        p = f"candle/Data/Images/Normal/{i:04d}.JPG"
        _img(root / p, i, fmt="JPEG")
        rows.append(f"candle,train,normal,{p},")
    _img(root / "candle/Data/Images/Normal/0100.JPG", 9, fmt="JPEG")
    rows.append("candle,test,normal,candle/Data/Images/Normal/0100.JPG,")
    _img(root / "candle/Data/Images/Anomaly/000.JPG", 10, size=(80, 60), fmt="JPEG")
    _mask(root / "candle/Data/Masks/Anomaly/000.png", [(10, 10, 20, 20)], size=(80, 60), value=3)
    rows.append("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    (root / "candle" / "image_anno.csv").write_text(
        'image,label,mask\ncandle/Data/Images/Anomaly/000.JPG,"chunk of wax missing,wax melded out of the candle",x\n')
    rep = import_dataset("visa", root, tmp_path / "out")
    m = read_manifest(rep.manifest)
    a = [s for s in m if s.is_anomalous][0]
    assert (a.width, a.height) == (80, 60)
    assert [b.xyxy for b in a.boxes] == [(10, 10, 20, 20)]
    assert a.boxes[0].label == "chunk of wax missing, wax melded out of the candle"
    assert a.subdataset == "VisA" and a.category == "candle"
    # a mask at another resolution than its image: boxes scale to the image
    _mask(root / "candle/Data/Masks/Anomaly/000.png", [(5, 5, 10, 10)], size=(40, 30))
    m2 = read_manifest(import_dataset("visa", root, tmp_path / "out2").manifest)
    assert [b.xyxy for b in [s for s in m2 if s.is_anomalous][0].boxes] == [(10, 10, 20, 20)]


def _mmrad_tree(root: Path):
    _img(root / "imgs" / "ref.png", 1, size=(100, 50))
    _img(root / "imgs" / "q1.png", 2, size=(100, 50))
    _img(root / "imgs" / "q2.png", 3, size=(100, 50))
    recs = [
        {"id": "a1", "subdataset": "MVTecAD", "category": "bottle", "images": ["imgs/ref.png", "imgs/q1.png"],
         "conversations": [{"from": "human", "value": "<image><image>Any anomaly?"},
                           {"from": "gpt", "value": "<think>a dark spot at the left</think><answer>Yes. "
                            "{'bbox_2d': [10, 5, 30, 25], 'label': 'contamination'}, "
                            "{'bbox_2d': [60, 10, 90, 40], 'label': 'broken'}</answer>"}]},
        {"id": "a2", "dataset": "MVTecAD", "class": "bottle", "split": "test", "coords": "norm1000",
         "messages": [{"role": "user", "content": [{"type": "image", "image": "imgs/ref.png"},
                                                    {"type": "image_url", "image_url": {"url": "file://imgs/q2.png"}},
                                                    {"type": "text", "text": "Any anomaly?"}]},
                      {"role": "assistant", "content": "<answer>Yes, [{'bbox_2d': [100, 200, 300, 600], 'label': 'scratch'}]</answer>"}]},
        {"id": "n1", "subdataset": "MVTecAD", "category": "bottle", "images": ["imgs/ref.png", "imgs/q2.png"],
         "conversations": [{"from": "gpt", "value": "<answer>No.</answer>"}]},
    ]
    return recs


def test_mmrad_conversation_records(tmp_path):
    src = tmp_path / "rel"
    recs = _mmrad_tree(src)
    (src / "data.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rep = import_dataset("mmrad", src / "data.jsonl", tmp_path / "out")
    m = read_manifest(rep.manifest)
    a1, a2, n1 = m.get("a1"), m.get("a2"), m.get("n1")
    assert [(b.xyxy, b.label) for b in a1.boxes] == [((10, 5, 30, 25), "contamination"), ((60, 10, 90, 40), "broken")]
    assert a1.reasoning.startswith("<think>") and a1.reference == "../rel/imgs/ref.png"
    assert [b.xyxy for b in a2.boxes] == [(10, 10, 30, 30)]  # norm1000 on a 100x50 image
    assert a2.reasoning is None and a2.image == "../rel/imgs/q2.png"
    assert n1.label == "normal" and not n1.boxes and (n1.width, n1.height) == (100, 50)
    # the same records as a JSON array work too
    (src / "data.jsonl").unlink()
    (src / "data.json").write_text(json.dumps(recs))
    assert len(read_manifest(import_dataset("mmrad", src / "data.json", tmp_path / "out2").manifest)) == 3


@pytest.mark.parametrize("patch,msg", [
    ({"label": "normal"}, "field 'label' is 'normal' but the answer says Yes"),
    ({"conversations": [{"from": "gpt", "value": "I cannot tell."}]}, "no readable Yes/No"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "no assistant"),
    ({"images": ["imgs/ref.png", "imgs/nope.png"]}, "image not found"),
    ({"category": None}, "missing 'category'"),
    ({"conversations": [{"from": "gpt", "value": "<answer>Yes.</answer>"}]}, "gives no box"),
])
def test_mmrad_errors_name_the_record(tmp_path, patch, msg):
    recs = _mmrad_tree(tmp_path)
    rec = {**recs[0], **patch}
    (tmp_path / "d.jsonl").write_text(json.dumps(recs[2]) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(ImportFormatError) as e:
        import_dataset("mmrad", tmp_path / "d.jsonl", tmp_path / "out")
    assert msg in str(e.value) and "d.jsonl:2" in str(e.value)


def test_layout_errors_name_the_path(tmp_path):
    root = _mvtec_tree(tmp_path / "src")
    shutil.rmtree(root / "zipper" / "train")
    with pytest.raises(ImportFormatError, match=r"missing folder: .*zipper/train/good"):
        import_dataset("mvtec", root, tmp_path / "o")
    root = _mvtec_tree(tmp_path / "src2")
    _mask(root / "bottle" / "ground_truth" / "broken_large" / "007_mask.png", ONE)
    with pytest.raises(ImportFormatError, match=r"mask without image: .*007_mask.png"):
        import_dataset("mvtec", root, tmp_path / "o")
    root = _mvtec_tree(tmp_path / "src3")
    (root / "bottle" / "ground_truth" / "broken_large" / "001_mask.png").unlink()
    with pytest.raises(ImportFormatError, match=r"mask not found for anomalous image .*001.png"):
        import_dataset("mvtec", root, tmp_path / "o")
    root = _mvtec_tree(tmp_path / "src4")
    (root / "bottle" / "test" / "good" / "000.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImportFormatError, match=r"cannot read image .*bottle/test/good/000.png"):
        import_dataset("mvtec", root, tmp_path / "o", reference="first")
    with pytest.raises(ImportFormatError, match="no category folders"):
        import_dataset("mvtec", tmp_path / "src4" / "bottle" / "train", tmp_path / "o")
    with pytest.raises(ImportFormatError, match="missing folder"):
        import_dataset("mvtec3d", tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(ImportFormatError, match="VisA split file not found"):
        import_dataset("visa", root, tmp_path / "o")


def test_empty_mask_is_skipped_with_a_warning(tmp_path, caplog):
    root = _mvtec_tree(tmp_path / "src")
    _mask(root / "bottle" / "ground_truth" / "broken_large" / "001_mask.png", [])
    rep = import_dataset("mvtec", root, tmp_path / "out", reference="first")
    assert len(rep.skipped) == 1 and rep.samples == 11
    assert "has no component" in caplog.text


@pytest.mark.parametrize("mode", ["copy", "symlink"])
def test_copy_and_symlink_keep_the_manifest_valid(tmp_path, mode):
    root = _mvtec_tree(tmp_path / "src")
    rep = import_dataset("mvtec", root, tmp_path / "out", files=mode, reference="random")
    m = read_manifest(rep.manifest, check_files=True)
    s = m.get("MVTecAD/bottle/test/broken_large/000")
    assert s.image == "files/bottle/test/broken_large/000.png"
    assert s.mask == "files/bottle/ground_truth/broken_large/000_mask.png"
    assert (tmp_path / "out" / s.image).is_symlink() == (mode == "symlink")
    if mode == "copy":
        shutil.rmtree(root)
        read_manifest(rep.manifest, check_files=True)  # self-contained


def test_cli_import_and_error(tmp_path, capsys):
    root = _mvtec_tree(tmp_path / "src")
    assert main(["data", "import", "mvtec", str(root), "--out", str(tmp_path / "out"), "--reference", "first"]) == 0
    out = capsys.readouterr().out
    assert "bottle" in out and "sha256" in out
    assert main(["data", "import", "visa", str(root), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1cls.csv" in err


def test_data_check_reports_every_broken_file(tmp_path, capsys):
    root = _mvtec_tree(tmp_path / "src")
    rep = import_dataset("mvtec", root, tmp_path / "out", files="copy", reference="first")
    assert main(["data", "check", str(rep.manifest), "--boxes"]) == 0
    assert "OK" in capsys.readouterr().out
    out = tmp_path / "out"
    (out / "files/bottle/test/broken_large/001.png").write_bytes(b"not a png")
    _mask(out / "files/zipper/ground_truth/broken_large/000_mask.png", [])
    lines = rep.manifest.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["width"] = 65
    lines[0] = json.dumps(rec)
    rep.manifest.write_text("\n".join(lines) + "\n")
    assert main(["data", "check", str(rep.manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(l.startswith("MVTecAD/bottle/test/broken_large/001: image") and "cannot decode" in l for l in err)
    assert any(l.startswith("MVTecAD/zipper/test/broken_large/000: mask") and "empty" in l for l in err)
    assert any("is 64x64 but the manifest says 65x64" in l for l in err)
    assert any("covers no mask pixel" in l for l in err)
    # a structurally broken manifest is one line naming the line, exit 2
    rep.manifest.write_text("{not json\n")
    assert main(["data", "check", str(rep.manifest)]) == 2
    assert ":1:" in capsys.readouterr().err


def test_data_check_on_the_synthetic_benchmark(synth_small, capsys):
    assert main(["data", "check", str(synth_small), "--boxes"]) == 0
    assert "OK" in capsys.readouterr().out


def test_boxes_from_mask_hand_cases():
    from mmrbench.data.masks import boxes_from_labelled_masks, boxes_from_mask

    m = np.zeros((20, 30), np.uint8)
    m[2:5, 3:9] = 255          # 3x6 block -> [3, 2, 9, 5] (x2/y2 exclusive)
    m[10, 10] = m[11, 11] = m[12, 12] = m[13, 13] = 1  # diagonal stroke: one component under 8-connectivity
    m[18, 28] = 255            # a 1-pixel speck: ignored (< MIN_COMPONENT_AREA)
    boxes = boxes_from_mask(m, "scratch")
    assert [b.xyxy for b in boxes] == [(3, 2, 9, 5), (10, 10, 14, 14)]
    assert all(b.label == "scratch" for b in boxes)
    assert [b.xyxy for b in boxes_from_mask(m, min_area=1)][-1] == (28, 18, 29, 19)
    assert boxes_from_mask(np.zeros((5, 5), np.uint8)) == []
    rgb = np.stack([m, m, m], 2)  # colour masks are read as "any channel non-zero"
    assert [b.xyxy for b in boxes_from_mask(rgb)] == [b.xyxy for b in boxes]
    # labelled union: touching defects merge into one box labelled by the larger one
    a = np.zeros((10, 10), np.uint8)
    a[1:4, 1:4] = 255
    b = np.zeros((10, 10), np.uint8)
    b[4:5, 1:3] = 255
    c = np.zeros((10, 10), np.uint8)
    c[7:9, 7:9] = 255
    got = boxes_from_labelled_masks([(a, "hole"), (b, "crack"), (c, "stain")])
    assert [(x.xyxy, x.label) for x in got] == [((1, 1, 4, 5), "hole"), ((7, 7, 9, 9), "stain")]
