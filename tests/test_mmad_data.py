"""Reading MMAD as released: typed questions, MMAD's path rules, one-line errors, the import command."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmrbench.mmad.data import MMADFormatError, import_mmad, load_mmad

AD_Q = {"Question": "Is there any defect in the object?", "Options": {"A": "Yes.", "B": "No."}, "type": "Anomaly Detection"}


def _q(text, opts, ans, qtype):
    return {"Question": text, "Options": dict(zip("ABCDE", opts)), "Answer": ans, "type": qtype}


def release_dict() -> dict:
    """A tiny release in MMAD's layout: two datasets, normal images under .../good/..., 1 similar and
    2 random templates each; anomalous images carry 4 questions, normal ones 3."""
    def tmpl(ds, cat):
        return {"similar_templates": [f"{ds}/{cat}/train/good/000.png"],
                "random_templates": [f"{ds}/{cat}/train/good/001.png", f"{ds}/{cat}/train/good/000.png"]}
    out = {}
    for ds, cat in (("DS-MVTec", "bottle"), ("VisA", "candle")):
        out[f"{ds}/{cat}/test/broken/000.png"] = {
            "conversation": [dict(AD_Q, Answer="A"),
                             _q("What type of defect?", ["Crack.", "Stain.", "Hole.", "None."], "C", "Defect Classification"),
                             _q("Where is the defect?", ["Top left.", "Center.", "Bottom right.", "Nowhere."], "B", "Defect Localization"),
                             _q("What shape is the object?", ["Round.", "Square."], "A", "Object Structure")],
            "mask_path": "rbg_mask/broken/000_mask.png", **tmpl(ds, cat)}
        out[f"{ds}/{cat}/test/good/000.png"] = {
            "conversation": [dict(AD_Q, Answer="B"),
                             _q("What is the object?", [cat + ".", "Screw.", "Pill.", "Wood."], "A", "Object Classification"),
                             _q("How many items?", ["One.", "Two.", "Three."], "A", "Object Details")],
            "mask_path": None, **tmpl(ds, cat)}
    return out


def write_release(root: Path, obj: dict | None = None, *, images: bool = True) -> Path:
    obj = release_dict() if obj is None else obj
    root.mkdir(parents=True, exist_ok=True)
    (root / "mmad.json").write_text(json.dumps(obj, indent=1), encoding="utf-8")
    if images:
        for key, v in obj.items():
            for rel in [key, *v.get("similar_templates", []), *v.get("random_templates", [])]:
                p = root / rel
                if not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    shade = 40 if "good" in rel else 200
                    Image.new("RGB", (24, 16), (shade, shade, 90)).save(p)
    return root


def test_load_typed_questions(tmp_path):
    data = load_mmad(write_release(tmp_path / "MMAD"), check_images=True)
    assert len(data.images) == 4 and len(data.questions) == 14
    q = data.questions[1]
    assert q.id == "DS-MVTec/bottle/test/broken/000.png#1"
    assert (q.dataset, q.category, q.is_normal, q.answer) == ("DS-MVTec", "bottle", False, "C")
    assert q.options[0] == ("A", "Crack.") and q.letters == ("A", "B", "C", "D")
    # MMAD's rules: "Object Structure"/"Object Details" are Object Analysis; 'good' in the path = normal
    assert data.questions[3].type == "Object Structure" and data.questions[3].subtask == "Object Analysis"
    normal = data.image("VisA/candle/test/good/000.png")
    assert normal.is_normal and all(q.is_normal for q in normal.questions)
    # mask path is relative to the first three components of the image key
    assert data.images[0].mask == "DS-MVTec/bottle/test/rbg_mask/broken/000_mask.png"
    assert data.images[0].random_templates == ("DS-MVTec/bottle/train/good/001.png", "DS-MVTec/bottle/train/good/000.png")
    assert len(data.sha256) == 64


@pytest.mark.parametrize("mutate, field", [
    (lambda o, k: o[k]["conversation"][1].pop("Answer"), "conversation[1].Answer"),
    (lambda o, k: o[k]["conversation"][1].update(Answer="E"), "conversation[1].Answer"),
    (lambda o, k: o[k]["conversation"][0].update(Options={"A": "Yes."}), "conversation[0].Options"),
    (lambda o, k: o[k]["conversation"][0].update(Options={"A": "Yes.", "F": "No."}), "conversation[0].Options"),
    (lambda o, k: o[k]["conversation"][2].update(type=""), "conversation[2].type"),
    (lambda o, k: o[k]["conversation"][2].pop("Question"), "conversation[2].Question"),
    (lambda o, k: o[k].update(conversation=[]), "conversation"),
    (lambda o, k: o[k].update(similar_templates="x.png"), "similar_templates"),
    (lambda o, k: o[k].update(mask_path=3), "mask_path"),
])
def test_malformed_field_is_one_line_naming_file_image_field(tmp_path, mutate, field):
    obj = release_dict()
    key = next(iter(obj))
    mutate(obj, key)
    root = write_release(tmp_path, obj, images=False)
    with pytest.raises(MMADFormatError) as ei:
        load_mmad(root)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"{root / 'mmad.json'}: image '{key}': field '{field}':")


def test_bad_json_key_and_missing_file(tmp_path):
    (tmp_path / "mmad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(MMADFormatError, match=r"mmad.json: not valid JSON"):
        load_mmad(tmp_path)
    write_release(tmp_path / "b", {"bottle.png": release_dict()["VisA/candle/test/good/000.png"]}, images=False)
    with pytest.raises(MMADFormatError, match=r"image 'bottle.png': field '<key>'"):
        load_mmad(tmp_path / "b")
    with pytest.raises(Exception, match="MMAD file not found"):
        load_mmad(tmp_path / "nowhere")


def test_missing_image_named(tmp_path):
    root = write_release(tmp_path)
    (root / "VisA/candle/train/good/001.png").unlink()
    with pytest.raises(MMADFormatError, match=r"image 'VisA/candle/test/broken/000.png': field 'random_templates': image not found"):
        load_mmad(root, check_images=True)


def test_import_writes_questions_and_info(tmp_path):
    root = write_release(tmp_path / "MMAD")
    info = import_mmad(root, tmp_path / "out")
    assert info["images"] == 4 and info["questions"] == 14
    assert info["per_dataset"]["VisA"] == {"Anomaly Detection": 2, "Defect Classification": 1, "Defect Localization": 1,
                                           "Object Analysis": 2, "Object Classification": 1}
    lines = (tmp_path / "out" / "questions.jsonl").read_text().splitlines()
    assert len(lines) == 14 and json.loads(lines[0])["id"] == "DS-MVTec/bottle/test/broken/000.png#0"
    assert json.loads((tmp_path / "out" / "info.json").read_text())["sha256"] == info["sha256"]
