"""A few-sample manifest for the trainer tests (the synthetic benchmark is bigger than they need)."""
from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from mmrbench.data.manifest import write_manifest
from mmrbench.data.schema import Box, Sample


def write_toy_manifest(root: Path, n: int = 6, size: int = 32, seed: int = 0, with_reasoning: bool = True) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (128, 128, 128)).save(root / "ref.png")
    samples = []
    for i in range(n):
        anomalous = i % 2 == 1
        im = Image.new("RGB", (size, size), (128, 128, 128))
        boxes = []
        if anomalous:
            x, y = rng.randrange(0, size - 10), rng.randrange(0, size - 10)
            ImageDraw.Draw(im).rectangle([x, y, x + 9, y + 9], fill=(10, 10, 10))
            boxes = [Box(x, y, x + 10, y + 10, "hole")]
        im.save(root / f"q{i}.png")
        reasoning = None
        if with_reasoning and i == 1:
            reasoning = "<think>A dark hole.</think><answer>Yes. {'bbox_2d': [0, 0, 1, 1], 'label': 'hole'}</answer>"
        samples.append(Sample(id=f"s{i}", subdataset="Toy", category="plate", split="train", image=f"q{i}.png",
                              label="anomalous" if anomalous else "normal", width=size, height=size,
                              reference="ref.png", boxes=boxes, reasoning=reasoning))
    path = root / "manifest.jsonl"
    write_manifest(path, samples)
    return path
