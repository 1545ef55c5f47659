"""The MMAD-format miniature of the bundled synthetic benchmark: questions follow the labels, the file
loads as an MMAD release, and an oracle replayed through the scripted provider scores 100 %."""
from __future__ import annotations

import json

import pytest

from mmrbench.data.manifest import read_manifest
from mmrbench.data.synth import generate
from mmrbench.mmad.data import load_mmad
from mmrbench.mmad.run import evaluate_mmad
from mmrbench.mmad.synth import ALL_CELLS, grid_cell, write_synth_mmad
from mmrbench.mmad.task import MMADTask


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, seed=0, scale="small", categories=["carpet", "bottle"], progress=False)
    return out


def test_grid_cells():
    assert len(set(ALL_CELLS)) == 9 and "center" in ALL_CELLS
    assert grid_cell(10, 10, 300, 300) == "top left" and grid_cell(299, 150, 300, 300) == "middle right"
    assert grid_cell(150, 150, 300, 300) == "center" and grid_cell(150, 299.9, 300, 300) == "bottom center"


def test_questions_follow_labels(synth):
    path = write_synth_mmad(synth)
    assert path == synth / "images" / "mmad.json"
    data = load_mmad(path, check_images=True)
    manifest = read_manifest(synth / "manifest.jsonl", check_files=False)
    test = {s.image.split("images/", 1)[1]: s for s in manifest.samples if s.split == "test"}
    assert {im.key for im in data.images} == set(test)
    answer_letters = set()
    for im in data.images:
        s = test[im.key]
        assert im.dataset == s.subdataset and im.category == s.category and im.is_normal == (not s.is_anomalous)
        opts = {q.type: dict(q.options)[q.answer] for q in im.questions}
        answer_letters.update(q.answer for q in im.questions)
        assert opts["Anomaly Detection"] == ("Yes." if s.is_anomalous else "No.")
        assert opts["Object Classification"] == s.category.replace("_", " ") + "."
        if s.is_anomalous:
            b = s.boxes[0]
            assert opts["Defect Classification"] == b.label.replace("_", " ") + "."
            assert opts["Defect Localization"] == f"At the {grid_cell((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, s.width, s.height)}."
            dl = next(q for q in im.questions if q.type == "Defect Localization")
            assert len(dl.options) == 4 and len({v for _, v in dl.options}) == 4
        else:
            assert set(opts) == {"Anomaly Detection", "Object Classification"}
        assert im.similar_templates[0] == s.reference.split("images/", 1)[1]
        assert all("/train/good/" in t for t in im.random_templates) and len(im.random_templates) == 4
    assert len(answer_letters) >= 3  # options are shuffled: the right letter varies
    # deterministic
    first = path.read_bytes()
    assert write_synth_mmad(synth).read_bytes() == first


def test_oracle_and_constant_through_scripted_provider(synth, tmp_path):
    data = load_mmad(write_synth_mmad(synth))
    queries = MMADTask(data).select()
    oracle = tmp_path / "oracle.jsonl"
    with open(oracle, "w") as f:
        for q in queries:
            text = "\n".join(f"{k}. Answer: {x.answer}." for k, x in enumerate(q.questions, 1)) \
                if len(q.questions) > 1 else f"Answer: {q.questions[0].answer}."
            f.write(json.dumps({"id": q.id, "response": text}) + "\n")
    rep = evaluate_mmad(f"scripted:{oracle}", data, tmp_path / "o")
    for name, row in rep.rows.items():
        assert all(v == 100.0 for c, v in row.items() if c not in ("Overkill", "Miss")), name
        assert row["Overkill"] == 0.0 and row["Miss"] == 0.0
    # a model that always says "Yes, defective" and "A" to everything else
    def says_yes(q):
        if q.questions[0].type == "Anomaly Detection":
            return next(k for k, v in q.questions[0].options if v == "Yes.")
        return " ".join("A" * len(q.questions))

    constant = tmp_path / "a.jsonl"
    constant.write_text("".join(json.dumps({"id": q.id, "response": says_yes(q)}) + "\n" for q in queries))
    rep = evaluate_mmad(f"scripted:{constant}", data, tmp_path / "c")
    avg = rep.rows["Average"]
    assert avg["Anomaly Detection"] == 50.0 and avg["Overkill"] == 100.0 and avg["Miss"] == 0.0
    assert avg["Average"] < 60


def test_label_disagreeing_with_path_rule(tmp_path):
    from mmrbench.errors import MMRBenchError
    out = tmp_path / "s"
    generate(out, seed=0, scale="small", categories=["carpet"], progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    bad = [json.loads(x) for x in lines]
    for d in bad:
        if d["split"] == "test" and d["label"] == "normal":
            d["label"] = "anomalous"
            d["boxes"], d["box_labels"] = [[1, 1, 5, 5]], ["stain"]
            break
    (out / "manifest.jsonl").write_text("".join(json.dumps(d) + "\n" for d in bad))
    with pytest.raises(MMRBenchError, match="MMAD tells normal images by 'good' in the path"):
        write_synth_mmad(out)
