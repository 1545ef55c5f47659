"""Tiny benchmark + runs for the leaderboard tests: a manifest with real PNG images and runs whose
result.json is produced by the real scorer, as ``mmrbench eval`` writes them."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from mmrbench.data.manifest import file_sha256, write_manifest
from mmrbench.data.schema import Box, Sample
from mmrbench.predictions import Prediction, write_predictions
from mmrbench.results import Result, write_result
from mmrbench.scoring import score_predictions

W, H = 64, 48
# (subdataset, category, n_anomalous, n_normal)
LAYOUT = [("MVTecAD", "bottle", 4, 3), ("MVTecAD", "screw", 3, 3), ("VisA", "candle", 4, 4)]


def make_benchmark(root: Path) -> tuple[Path, list[Sample]]:
    """Manifest + images: anomalous images get one or two dark rectangles (their gt boxes)."""
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for sub, cat, n_anom, n_norm in LAYOUT:
        d = root / sub / cat
        d.mkdir(parents=True, exist_ok=True)
        ref = d / "ref.png"
        Image.new("RGB", (W, H), (200, 200, 190)).save(ref)
        for i in range(n_anom + n_norm):
            sid = f"{sub}/{cat}/{i:03d}"
            im = Image.new("RGB", (W, H), (200, 200, 190))
            boxes = []
            if i < n_anom:
                x = 4 + 7 * i
                boxes.append(Box(x, 6, x + 12, 18, "scratch"))
                if i % 2 == 1:
                    boxes.append(Box(40, 28, 56, 42, "dent"))
                dr = ImageDraw.Draw(im)
                for b in boxes:
                    dr.rectangle([b.x1, b.y1, b.x2 - 1, b.y2 - 1], fill=(40, 40, 40))
            path = d / f"{i:03d}.png"
            im.save(path)
            samples.append(Sample(id=sid, subdataset=sub, category=cat, split="test",
                                  image=path.relative_to(root).as_posix(), reference=ref.relative_to(root).as_posix(),
                                  label="anomalous" if boxes else "normal", width=W, height=H, boxes=boxes))
    man = root / "manifest.jsonl"
    write_manifest(man, samples)
    return man, samples


def answer(boxes, think="I compare the query with the reference.") -> str:
    if not boxes:
        return f"<think>{think}</think><answer>No.</answer>"
    body = ", ".join("{'bbox_2d': [%d, %d, %d, %d], 'label': '%s'}" % (*b[:4], b[4] if len(b) > 4 else "x")
                     for b in boxes)
    return f"<think>{think}</think><answer>Yes. {body}</answer>"


def responses(samples, skill: int):
    """Deterministic model of a given skill (0..3): misses and false alarms depend on sample index."""
    out = {}
    for k, s in enumerate(samples):
        gt = [(b.x1, b.y1, b.x2, b.y2, b.label) for b in s.boxes]
        wrong = (k * 7 + skill) % 4 >= skill
        if s.is_anomalous:
            out[s.id] = answer([] if wrong else gt)
        else:
            out[s.id] = answer([(1, 1, 10, 10, "stain")] if wrong else [])
    return out


def make_run(run_dir: Path, manifest: Path, samples, *, name: str = "tiny-model", skill: int = 2,
             texts: dict[str, str] | None = None, variant: str = "default") -> Path:
    """predictions.jsonl + result.json exactly as the harness writes them (metrics from the scorer)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    texts = texts if texts is not None else responses(samples, skill)
    preds = [Prediction(id=s.id, response=texts[s.id], image_sizes=[[W, H], [W, H]], convention="pixel")
             for s in samples]
    write_predictions(run_dir / "predictions.jsonl", preds)
    report = score_predictions(samples, preds)
    res = Result(
        model={"name": name, "provider": "scripted", "model_id": name, "convention": "pixel"},
        dataset={"name": "tiny", "manifest_sha256": file_sha256(manifest), "split": "test",
                 "subdatasets": sorted({s.subdataset for s in samples})},
        metrics=report.to_json(), protocol={"name": "mmr-ad-v1", "prompt_variant": variant},
        predictions_sha256=file_sha256(run_dir / "predictions.jsonl"),
        harness={"name": "mmrbench", "version": "test"}, date="2026-11-23T00:00:00Z", provenance="run")
    write_result(run_dir / "result.json", res)
    return run_dir


def edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d, indent=2))
