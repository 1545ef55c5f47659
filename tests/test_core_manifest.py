"""Manifest validation names the line and the field; good manifests round-trip."""
import json

import pytest
from PIL import Image

from mmrbench.data.manifest import read_manifest, write_manifest
from mmrbench.data.schema import Box, Sample
from mmrbench.errors import ManifestError


def good_line(**over):
    d = {"id": "s1", "subdataset": "MVTecAD", "category": "screw", "split": "test", "image": "q.png",
         "reference": "r.png", "label": "anomalous", "width": 64, "height": 48,
         "boxes": [[1, 2, 10, 20]], "box_labels": ["scratch"]}
    d.update(over)
    return d


@pytest.fixture
def folder(tmp_path):
    for name in ("q.png", "r.png"):
        Image.new("RGB", (64, 48)).save(tmp_path / name)
    return tmp_path


def write(folder, *dicts, raw=None):
    p = folder / "manifest.jsonl"
    p.write_text(raw if raw is not None else "".join(json.dumps(d) + "\n" for d in dicts))
    return p


def test_round_trip(folder):
    s = Sample(id="s1", subdataset="MVTecAD", category="screw", split="test", image="q.png", label="anomalous",
               width=64, height=48, reference="r.png", boxes=[Box(1, 2, 10, 20, "scratch")], extra={"source": "x"})
    sha = write_manifest(folder / "manifest.jsonl", [s])
    m = read_manifest(folder)
    assert m.sha256 == sha
    assert m.samples[0] == s
    assert m.resolve("q.png") == (folder / "q.png").resolve()


@pytest.mark.parametrize("override, field, message", [
    ({"label": "broken"}, "label", "unknown label"),
    ({"split": "val"}, "split", "unknown split"),
    ({"boxes": [[10, 2, 10, 20]]}, "boxes[0]", "empty box"),
    ({"boxes": [[1, 2, 65, 20]]}, "boxes[0]", "outside"),
    ({"boxes": [[1, 2, 3]]}, "boxes[0]", "expected"),
    ({"box_labels": []}, "box_labels", "one per box"),
    ({"width": "64"}, "width", "expected int"),
    ({"image": "missing.png"}, "image", "file not found"),
    ({"label": "normal"}, "boxes", "normal sample cannot have boxes"),
    ({"boxes": [], "box_labels": []}, "boxes", "needs at least one box"),
])
def test_errors_name_line_and_field(folder, override, field, message):
    p = write(folder, good_line(id="s0"), good_line(**override))
    with pytest.raises(ManifestError) as ei:
        read_manifest(p)
    text = str(ei.value)
    assert f"{p}:2:" in text
    assert f"field '{field}'" in text
    assert message in text


def test_missing_field(folder):
    d = good_line()
    del d["category"]
    with pytest.raises(ManifestError, match=r":1: field 'category': missing"):
        read_manifest(write(folder, d))


def test_duplicate_id(folder):
    with pytest.raises(ManifestError, match=r":2: field 'id': duplicate id 's1' \(first on line 1\)"):
        read_manifest(write(folder, good_line(), good_line()))


def test_malformed_json_line(folder):
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: not valid JSON"):
        read_manifest(write(folder, raw=json.dumps(good_line()) + "\n{not json\n"))


def test_binary_line(folder):
    p = folder / "manifest.jsonl"
    p.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ManifestError, match=r":1: not valid JSON"):
        read_manifest(p)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")


def test_empty_manifest(folder):
    with pytest.raises(ManifestError, match="no samples"):
        read_manifest(write(folder, raw="\n\n"))


def test_check_files_off(folder):
    m = read_manifest(write(folder, good_line(image="elsewhere.png")), check_files=False)
    assert m.samples[0].image == "elsewhere.png"
