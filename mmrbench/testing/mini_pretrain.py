"""Grounding pretraining for the mini base model: the skill a real Qwen2.5-VL brings to LoRA.

The paper fine-tunes a *pretrained* Qwen2.5-VL with LoRA. That model already looks at images and
already writes ``{'bbox_2d': [x1, y1, x2, y2], 'label': ...}`` for what it is asked to find;
SFT and GRPO only point that skill at industrial defects. The mini model of
:mod:`mmrbench.testing.mini_qwen` starts random, so its LoRA runs had to learn seeing, attending
and writing coordinates at once from ~500 images: half of the runs never left a constant answer
and none wrote a usable box (docs/training.md).

This module gives the mini base the missing pretraining, on data that is *not* the benchmark's:
procedural textures (filtered noise, stripes, grain) carrying zero to two generic marks (ellipses,
strokes, blots, darker or lighter or coloured), drawn here at the model's own input size, and the
grounding text a pretrained model would answer with: ``None.`` or one ``bbox_2d`` dict per mark
with the label ``mark``. No synthetic-benchmark painter, category or image is used, so the held-out
split stays unseen. Training is full-parameter on the language model and output head (a base
model's weights, not an adapter); the random vision tower stays frozen, as in every mini run.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: what the pretraining asks (a grounding request, not the benchmark's question)
GROUNDING_PROMPT = "Outline every mark in the image."
MAX_MARKS = 2


def _smooth_noise(rng: np.random.Generator, side: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features about ``scale`` pixels wide."""
    import cv2

    small = max(2, int(round(side / max(scale, 1.0))))
    g = np.asarray(cv2.resize(rng.standard_normal((small, small)).astype(np.float32), (side, side),
                              interpolation=cv2.INTER_CUBIC), np.float32)
    return (g - g.mean()) / (g.std() + 1e-6)


def draw_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A random texture as float RGB in [0, 1]: base colour plus fine and coarse structure."""
    base = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    tex = np.zeros((side, side), np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # blotchy
        tex += rng.uniform(0.03, 0.10) * _smooth_noise(rng, side, rng.uniform(4, 24))
    elif kind == 1:  # stripes / weave
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(3, 12)
        tex += rng.uniform(0.03, 0.10) * np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
    tex += rng.uniform(0.01, 0.06) * rng.standard_normal((side, side)).astype(np.float32)  # grain
    tint = rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    return np.clip(base[None, None, :] + tex[:, :, None] * tint[None, None, :], 0, 1)


def draw_mark(img: np.ndarray, rng: np.random.Generator, occupied: np.ndarray) -> tuple[int, int, int, int] | None:
    """Paint one mark where nothing is yet; returns its tight box (x1, y1, x2, y2), exclusive ends."""
    import cv2

    side = img.shape[0]
    size = int(rng.integers(max(4, side // 20), max(6, side // 6)))
    for _ in range(10):
        cx, cy = (int(v) for v in rng.integers(size // 2 + 1, side - size // 2 - 1, size=2))
        mask = np.zeros((side, side), np.uint8)
        shape = int(rng.integers(0, 3))
        if shape == 0:  # ellipse
            ax = (max(1, size // 2), max(1, int(size // 2 * rng.uniform(0.4, 1.0))))
            cv2.ellipse(mask, (cx, cy), ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        elif shape == 1:  # stroke
            ang = rng.uniform(0, math.pi)
            dx, dy = (size / 2) * math.cos(ang), (size / 2) * math.sin(ang)
            cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, int(rng.integers(1, 4)))
        else:  # blot: thresholded noise inside a disc
            yy, xx = np.mgrid[0:side, 0:side]
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= (size / 2) ** 2
            blot = _smooth_noise(rng, side, size / 3) > -0.3
            mask = (disc & blot).astype(np.uint8)
        if mask.sum() < 4 or (occupied & (mask > 0)).any():
            continue
        m = mask > 0
        change = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.5)
        colour = np.clip(img[m].mean(axis=0) + change * rng.uniform(0.6, 1.4, size=3), 0, 1)
        img[m] = colour
        ys, xs = np.nonzero(m)
        occupied |= cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return None


def grounding_example(rng: np.random.Generator, side: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One texture with 0 (40 %), 1 (45 %) or 2 (15 %) marks: uint8 RGB image and the marks' boxes."""
    img = draw_background(rng, side)
    n = int(rng.choice([0, 1, 2], p=[0.4, 0.45, 0.15]))
    occupied = np.zeros((side, side), bool)
    boxes = [b for b in (draw_mark(img, rng, occupied) for _ in range(n)) if b is not None]
    return (img * 255).round().astype(np.uint8), boxes


def grounding_text(boxes: list[tuple[int, int, int, int]]) -> str:
    """The answer of a grounding model, in the benchmark's box syntax (Qwen2.5-VL's ``bbox_2d`` dicts)."""
    if not boxes:
        return "None."
    return ", ".join(f"{{'bbox_2d': [{x1}, {y1}, {x2}, {y2}], 'label': 'mark'}}" for x1, y1, x2, y2 in boxes)


def pretrain(model, processor, *, side: int, steps: int, batch: int = 16, lr: float = 1e-3, seed: int = 0,
             log: Callable[[str], None] | None = None) -> list[float]:
    """Full-parameter training of the language model and head on grounding examples; returns losses.

    Images are drawn at ``side`` x ``side``, the mini processor's only size, so the boxes written are
    in the frame the model sees (the frame its answers use). Loss on the answer tokens only.
    """
    import torch
    from PIL import Image

    rng = np.random.default_rng([seed, 7])
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [p for n, p in model.named_parameters() if not n.startswith(("model.visual", "visual"))]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": GROUNDING_PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    n_prompt = None
    model.train()
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        examples = [grounding_example(rng, side) for _ in range(batch)]
        texts = [prompt + grounding_text(b) + "<|im_end|>" for _, b in examples]
        enc = processor(text=texts, images=[Image.fromarray(im) for im, _ in examples], return_tensors="pt",
                        padding=True, padding_side="right")
        if n_prompt is None:  # same image size and prompt for every example: one prompt length
            n_prompt = len(processor(text=[prompt], images=[Image.fromarray(examples[0][0])])["input_ids"][0])
        labels = enc["input_ids"].clone()
        labels[:, :n_prompt] = -100
        labels[enc["attention_mask"] == 0] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"pretrain step {step + 1}/{steps}: loss {np.mean(losses[-50:]):.3f} ({time.time() - t0:.0f} s)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses


def save_report(path: Path, losses: list[float], evaluation: dict | None = None) -> None:
    """``pretrain.json`` beside the weights: every step's loss and the grounding check after training."""
    import json

    path.write_text(json.dumps({"steps": len(losses), "grounding_eval": evaluation,
                                "loss": [round(x, 5) for x in losses]}) + "\n")


def grounding_eval(model, processor, *, side: int, n: int = 64, seed: int = 0, batch: int = 16,
                   max_new_tokens: int = 64) -> dict:
    """Greedy answers on ``n`` fresh examples (a stream training never draws): how well the base grounds.

    ``presence`` is the share of images where the model wrote a box exactly when there was a mark;
    ``recall_iou01`` / ``recall_iou05`` the share of marks matched one-to-one by a written box at IoU
    >= 0.1 / 0.5 (the protocol's matching); ``samples`` three answers to read.
    """
    import torch
    from PIL import Image

    from mmrbench.geometry import match_boxes
    from mmrbench.parsing import find_boxes

    rng = np.random.default_rng([seed, 1_000_003])  # never the training stream ([seed, 7])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": GROUNDING_PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    present = marks = hit01 = hit05 = 0
    samples: list[str] = []
    model.eval()
    for start in range(0, n, batch):
        examples = [grounding_example(rng, side) for _ in range(min(batch, n - start))]
        enc = processor(text=[prompt] * len(examples), images=[Image.fromarray(im) for im, _ in examples],
                        return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        texts = processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for (_, gt), text in zip(examples, texts):
            pred = [b.coords for b in find_boxes(text)]
            present += bool(pred) == bool(gt)
            marks += len(gt)
            if pred and gt:
                hit01 += len(match_boxes(pred, gt, 0.1))
                hit05 += len(match_boxes(pred, gt, 0.5))
            if len(samples) < 3:
                samples.append(text)
    return {"n": n, "presence": present / n, "recall_iou01": hit01 / max(1, marks),
            "recall_iou05": hit05 / max(1, marks), "samples": samples}
