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
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PretrainConfig:
    """How the mini base is pretrained. Defaults: the setting that made it see (docs/training.md,
    December 1): marks shrinking over the first 70 % of the steps, the per-token losses at weight 1,
    the language model trained, the random vision tower frozen."""

    steps: int
    batch: int = 8
    lr: float = 1e-3
    curriculum: float = 0.7
    token_aux: float = 1.0
    train_vision: bool = False
    #: decoder layer whose outputs the per-token losses read (0 = the last). The text that writes a box
    #: can only attend to what image tokens hold *below* the last layer, so a middle layer leaves the
    #: layers above it to find the mark and copy its place.
    token_layer: int = 0
    #: weight of :func:`~mmrbench.testing.mini_pretrain_losses.coordinate_loss`: the state that writes each coordinate's digits must hold the
    #: coordinate along the direction the image tokens hold their own row or column (0 = off)
    coord_aux: float = 0.0
    #: the decoder layer (1-based) whose outputs, through the final norm, :func:`~mmrbench.testing.mini_pretrain_losses.coordinate_loss` reads;
    #: 0 = the last. Measured: at the last layer it competes with the output head (docs/training.md)
    coord_layer: int = 0
    #: weight of :func:`~mmrbench.testing.mini_pretrain_losses.attention_loss`: at the positions that write a box's digits, the first head of
    #: decoder layer ``attn_layer`` must attend to the image tokens of that box's mark (0 = off)
    attn_aux: float = 0.0
    #: the decoder layer (1-based) whose attention :func:`~mmrbench.testing.mini_pretrain_losses.attention_loss` supervises; 0 = the last. Its keys
    #: and values are the outputs of the layer below, so ``token_layer = attn_layer - 1`` puts the marks and
    #: their places exactly where this attention reads
    attn_layer: int = 0
    #: weight of :func:`~mmrbench.testing.mini_pretrain_losses.value_loss`: the head :func:`~mmrbench.testing.mini_pretrain_losses.attention_loss` supervises must also *return* the mark's
    #: place (its output, before the output projection, holds the mark's centre along two fixed directions)
    value_aux: float = 0.0

    def tag(self) -> str:
        """Folder-name suffix: a different setting is a different base model."""
        return (f"pt{self.steps}b{self.batch}lr{self.lr:g}c{self.curriculum:g}a{self.token_aux:g}"
                f"{'v' if self.train_vision else ''}{f'L{self.token_layer}' if self.token_layer else ''}"
                f"{f'x{self.coord_aux:g}' if self.coord_aux else ''}"
                f"{f'@{self.coord_layer}' if self.coord_aux and self.coord_layer else ''}"
                f"{f't{self.attn_aux:g}@{self.attn_layer}' if self.attn_aux else ''}"
                f"{f'v{self.value_aux:g}' if self.value_aux else ''}")


#: what the pretraining asks (a grounding request, not the benchmark's question)
GROUNDING_PROMPT = "Outline every mark in the image."


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


def mark_size_range(side: int, grow: float = 0.0) -> tuple[int, int]:
    """Mark sizes in pixels, ``[low, high)``: 1/20 to 1/6 of the side, up to 1/5 to 1/2.5 with ``grow`` = 1.

    The benchmark's defects are about 1/10 of the side; the curriculum starts from marks that cover
    many image tokens and shrinks them to the final range.
    """
    lo, hi = max(4, side // 20), max(6, side // 6)
    return int(round(lo + grow * (side / 5 - lo))), int(round(hi + grow * (side / 2.5 - hi)))


def draw_mark(img: np.ndarray, rng: np.random.Generator, occupied: np.ndarray,
              sizes: tuple[int, int] | None = None) -> tuple[int, int, int, int] | None:
    """Paint one mark where nothing is yet; returns its tight box (x1, y1, x2, y2), exclusive ends."""
    import cv2

    side = img.shape[0]
    size = int(rng.integers(*(sizes or mark_size_range(side))))
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


def grounding_example(rng: np.random.Generator, side: int,
                      sizes: tuple[int, int] | None = None) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One texture with 0 (40 %), 1 (45 %) or 2 (15 %) marks: uint8 RGB image and the marks' boxes."""
    img = draw_background(rng, side)
    n = int(rng.choice([0, 1, 2], p=[0.4, 0.45, 0.15]))
    occupied = np.zeros((side, side), bool)
    boxes = [b for b in (draw_mark(img, rng, occupied, sizes) for _ in range(n)) if b is not None]
    return (img * 255).round().astype(np.uint8), boxes


def grounding_text(boxes: list[tuple[int, int, int, int]]) -> str:
    """The answer of a grounding model, in the benchmark's box syntax (Qwen2.5-VL's ``bbox_2d`` dicts)."""
    if not boxes:
        return "None."
    return ", ".join(f"{{'bbox_2d': [{x1}, {y1}, {x2}, {y2}], 'label': 'mark'}}" for x1, y1, x2, y2 in boxes)


def run_pretraining(model, processor, config: PretrainConfig, *, side: int, seed: int = 0, eval_every: int = 0,
                    log: Callable[[str], None] | None = None) -> list[float]:
    """Full-parameter training on grounding examples, as ``config`` says; returns every step's loss.

    Images are drawn at ``side`` x ``side``, the mini processor's only size, so the boxes written are
    in the frame the model sees (the frame its answers use). Loss on the answer tokens only, plus
    the weighted auxiliary losses ``config`` turns on (:mod:`mmrbench.testing.mini_pretrain_losses`: per-token
    ``token_aux``, coordinate ``coord_aux``, attention ``attn_aux``, value ``value_aux``). ``config.curriculum`` > 0
    starts from large marks and shrinks them to the final sizes over that share of the steps (:func:`mark_size_range`).
    ``eval_every`` logs :func:`grounding_eval` on 32 images every that many steps.
    """
    import torch
    from PIL import Image

    from mmrbench.testing.mini_pretrain_losses import (attention_loss, coordinate_loss, coordinate_targets,
                                                       merged_grid, token_aux_loss, value_loss)

    c = config
    steps = c.steps
    rng = np.random.default_rng([seed, 7])
    torch.manual_seed(seed)
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    trained = []
    for n, p in model.named_parameters():
        p.requires_grad_(c.train_vision or not n.startswith(("model.visual", "visual")))
        if p.requires_grad:
            trained.append(p)
    opt = torch.optim.AdamW(trained, lr=c.lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    prompt = grounding_prompt(processor)
    n_prompt = None
    impl = model.config._attn_implementation
    if c.attn_aux:  # attention weights are only returned by the eager implementation
        model.set_attn_implementation("eager")
    n_layers = model.config.text_config.num_hidden_layers
    attn_index = (c.attn_layer or n_layers) - 1
    for name, value in (("attn_layer", c.attn_layer), ("coord_layer", c.coord_layer)):
        if not 0 <= value <= n_layers:
            raise ValueError(f"PretrainConfig.{name}={value}: the model has {n_layers} decoder layers")
    head_out: dict[str, torch.Tensor] = {}
    hook = None
    if c.value_aux:  # head 0's output of the supervised layer: the input of its output projection, first head_dim
        attention = model.get_decoder().layers[attn_index].self_attn
        hook = attention.o_proj.register_forward_pre_hook(lambda _m, args: head_out.__setitem__("x", args[0]))
    model.train()
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        grow = max(0.0, 1.0 - step / (c.curriculum * steps)) if c.curriculum else 0.0
        examples = [grounding_example(rng, side, mark_size_range(side, grow)) for _ in range(c.batch)]
        texts = [prompt + grounding_text(b) + "<|im_end|>" for _, b in examples]
        enc = processor(text=texts, images=[Image.fromarray(im) for im, _ in examples], return_tensors="pt",
                        padding=True, padding_side="right")
        if n_prompt is None:  # same image size and prompt for every example: one prompt length
            n_prompt = len(processor(text=[prompt], images=[Image.fromarray(examples[0][0])])["input_ids"][0])
        labels = enc["input_ids"].clone()
        labels[:, :n_prompt] = -100
        labels[enc["attention_mask"] == 0] = -100
        out = model(**enc, labels=labels, output_hidden_states=bool(c.token_aux or c.coord_aux),
                    output_attentions=bool(c.attn_aux))
        loss = out.loss
        boxes = [b for _, b in examples]
        if c.token_aux:
            loss = loss + c.token_aux * token_aux_loss(model, out.hidden_states, enc, boxes, side, layer=c.token_layer)
        if c.coord_aux or c.attn_aux:
            grid = merged_grid(model, enc)
            ends = enc["attention_mask"].sum(1).tolist()  # right padding: each row's answer ends there
            where = [coordinate_targets(processor.tokenizer, enc["input_ids"][r, n_prompt:end].tolist(), side, grid[1])
                     for r, end in enumerate(ends)]
            if c.coord_aux:
                states = (out.hidden_states[-1] if c.coord_layer in (0, n_layers)
                          else model.get_decoder().norm(out.hidden_states[c.coord_layer]))
                loss = loss + c.coord_aux * coordinate_loss(states, n_prompt, where)
            if c.attn_aux:
                loss = loss + c.attn_aux * attention_loss(out.attentions[attn_index], enc, model.config.image_token_id,
                                                          grid, side, boxes, n_prompt, where)
            if c.value_aux:
                head_dim = head_out["x"].shape[-1] // model.config.text_config.num_attention_heads
                loss = loss + c.value_aux * value_loss(head_out["x"][..., :head_dim], n_prompt, where, boxes, side, grid)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"pretrain step {step + 1}/{steps}: loss {np.mean(losses[-50:]):.3f} ({time.time() - t0:.0f} s)")
        if log and eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            check = grounding_eval(model, processor, side=side, n=32, seed=seed)
            log(f"pretrain step {step + 1}: presence {check['presence']:.1%}, IoU 0.1 {check['recall_iou01']:.1%}, "
                f"IoU 0.5 {check['recall_iou05']:.1%}; {check['samples'][0]}")
            model.train()
    model.eval()
    if hook is not None:
        hook.remove()
    if c.attn_aux:
        model.set_attn_implementation(impl)
    for n, p in model.named_parameters():
        p.requires_grad_(was[n])
    return losses


def save_report(path: Path, losses: list[float], evaluation: dict | None, stages: list[str]) -> None:
    """``pretrain.json`` beside the weights: every step's loss (all stages in order), the stages' settings
    (:meth:`PretrainConfig.tag`) and the grounding check after training."""
    import json

    path.write_text(json.dumps({"steps": len(losses), "stages": stages, "grounding_eval": evaluation,
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

    rng = np.random.default_rng([seed, 1_000_003])  # never the training stream ([seed, 7])
    prompt = grounding_prompt(processor)
    answers: list[str] = []
    truths: list[list[tuple[int, int, int, int]]] = []
    model.eval()
    for start in range(0, n, batch):
        examples = [grounding_example(rng, side) for _ in range(min(batch, n - start))]
        enc = processor(text=[prompt] * len(examples), images=[Image.fromarray(im) for im, _ in examples],
                        return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        answers += processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        truths += [gt for _, gt in examples]
    return score_grounding(answers, truths)


def score_grounding(answers: list[str], truths: list[list[tuple[int, int, int, int]]]) -> dict:
    """How grounding answers match the marks drawn: see :func:`grounding_eval`. Boxes are read by the
    scorer's own parser and matched one-to-one as the protocol matches them."""
    from mmrbench.geometry import match_boxes
    from mmrbench.parsing import find_boxes

    present = marks = hit01 = hit05 = 0
    for text, gt in zip(answers, truths, strict=True):
        pred = [b.coords for b in find_boxes(text)]
        present += bool(pred) == bool(gt)
        marks += len(gt)
        hit01 += len(match_boxes(pred, gt, 0.1))
        hit05 += len(match_boxes(pred, gt, 0.5))
    n = len(answers)
    return {"n": n, "presence": present / max(1, n), "recall_iou01": hit01 / max(1, marks),
            "recall_iou05": hit05 / max(1, marks), "samples": answers[:3]}


def grounding_prompt(processor) -> str:
    """The chat-formatted grounding request for one image, up to the assistant's turn."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": GROUNDING_PROMPT}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
