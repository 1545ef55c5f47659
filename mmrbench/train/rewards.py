"""GRPO rewards of Anomaly-R1, in TRL's reward-function call signature.

``reward(prompts, completions, **columns) -> list[float]`` with one entry per completion and the
dataset columns passed as parallel lists, so the same functions can be handed to TRL's
GRPOTrainer for a cross-check. Columns used:

* ``label``: ``"normal"`` / ``"anomalous"`` (or a bool, True = anomalous);
* ``gt_boxes``: ground-truth boxes ``[[x1, y1, x2, y2], ...]`` in original pixels;
* ``image_size``: original ``(width, height)`` of the query image;
* ``sent_size``: ``(width, height)`` of the query as the policy saw it (the resized frame of
  Qwen2.5-VL); ``None`` means unresized;
* ``convention``: how the policy writes boxes (``pixel`` for Qwen2.5-VL), see :mod:`mmrbench.coords`.

Reward = accuracy + consistency penalty:

* accuracy: 1 when the answer's Yes/No (parsed by :func:`mmrbench.parsing.parse_answer`, exactly as
  the scorer reads it) matches the label, else 0; an unreadable answer gets 0.
* consistency: -0.2 for every ground-truth box that no predicted box matches one-to-one at
  IoU > 0.5 (:func:`mmrbench.geometry.match_boxes` with ``strict=True``). Decision (ours; the paper
  gives the rule only): the penalty counts ground-truth boxes, so it applies to anomalous samples
  only (a normal sample has none) and to *any* decision there: a "No" on an anomalous image with
  two defects scores 0 - 0.4, a "Yes" with both defects boxed scores 1. Extra predicted boxes are
  not penalised (the paper does not), and the scorer's own localisation metric is unaffected.

``box_reward = "giou"`` (:func:`graded_anomaly_reward`; a departure from the paper, off by default): the
same -0.2 per ground-truth box, scaled by how far its box is from a match. Each ground-truth box is paired
one-to-one with a predicted box (greedily by generalized IoU); a pair at IoU > 0.5 costs 0 as in the
paper, any other pair ``0.2 * (1 - (GIoU + 1) / 1.5)`` (GIoU in [-1, 0.5] there, so between 0.2 for a box
across the image and 0 at the match), an unpaired box 0.2. Why: the paper's penalty is flat below IoU 0.5,
so a policy whose boxes rarely reach it gets the same penalty on every response of a group and GRPO learns
nothing about where to draw them (docs/training.md); the graded one ranks a nearer box above a farther one.
"""
from __future__ import annotations

from typing import Any, Sequence

from mmrbench.coords import to_original
from mmrbench.geometry import giou, iou, match_boxes, take_one_to_one
from mmrbench.parsing import parse_answer

PENALTY_PER_MISSED_BOX = 0.2
MATCH_IOU = 0.5


def completion_text(completion: Any) -> str:
    """TRL passes completions as strings or as conversations ``[{"role": ..., "content": ...}]``."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        parts = []
        for msg in completion:
            content = msg.get("content", "") if isinstance(msg, dict) else msg
            if isinstance(content, list):
                content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
            parts.append(str(content))
        return "".join(parts)
    return str(completion)


def _is_anomalous(label: Any) -> bool:
    if isinstance(label, bool):
        return label
    return str(label).lower() == "anomalous"


def _column(kwargs: dict, name: str, n: int, default: Any = None) -> list:
    v = kwargs.get(name)
    if v is None:
        return [default] * n
    if len(v) != n:
        raise ValueError(f"reward column '{name}' has {len(v)} entries for {n} completions")
    return list(v)


def predicted_boxes_original(text: str, convention: str, sent_size, image_size) -> tuple[bool | None, list]:
    """Decision and predicted boxes mapped to original pixels (boxes only when the decision is Yes)."""
    parsed = parse_answer(text)
    boxes = [to_original(b.coords, convention, tuple(sent_size) if sent_size else None, tuple(image_size))
             for b in parsed.boxes] if parsed.decision else []
    return parsed.decision, boxes


def accuracy_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs) -> list[float]:
    """1.0 when the parsed Yes/No matches the label, else 0.0."""
    n = len(completions)
    labels = _column(kwargs, "label", n)
    out = []
    for comp, lab in zip(completions, labels):
        decision = parse_answer(completion_text(comp)).decision
        out.append(1.0 if decision is not None and decision == _is_anomalous(lab) else 0.0)
    return out


def missed_boxes(text: str, gt_boxes: Sequence[Sequence[float]], convention: str, sent_size, image_size) -> int:
    """Ground-truth boxes not matched by any predicted box at IoU > 0.5 (one-to-one)."""
    if not gt_boxes:
        return 0
    decision, preds = predicted_boxes_original(text, convention, sent_size, image_size)
    matches = match_boxes(preds, [tuple(g) for g in gt_boxes], MATCH_IOU, strict=True)
    return len(gt_boxes) - len(matches)


def _penalties(completions: Sequence[Any], kwargs: dict, penalty, who: str) -> list[float]:
    """Minus ``penalty(text, gt_boxes, convention, sent_size, image_size)`` for every completion, the columns
    read as TRL passes them."""
    n = len(completions)
    gts = _column(kwargs, "gt_boxes", n, [])
    sizes = _column(kwargs, "image_size", n)
    sent = _column(kwargs, "sent_size", n)
    conv = _column(kwargs, "convention", n, "pixel")
    out = []
    for comp, g, size, ss, cv in zip(completions, gts, sizes, sent, conv):
        if g and size is None:
            raise ValueError(f"{who} needs the 'image_size' column to map boxes")
        out.append(-penalty(completion_text(comp), g or [], cv or "pixel", ss, size))
    return out


def consistency_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs) -> list[float]:
    """-0.2 per ground-truth box left unmatched at IoU > 0.5."""
    return _penalties(completions, kwargs, lambda *a: PENALTY_PER_MISSED_BOX * missed_boxes(*a), "consistency_reward")


def anomaly_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs) -> list[float]:
    """The Anomaly-R1 reward: accuracy + consistency penalty (see the module docstring)."""
    acc = accuracy_reward(prompts, completions, **kwargs)
    pen = consistency_reward(prompts, completions, **kwargs)
    return [a + p for a, p in zip(acc, pen)]


def graded_box_penalty(text: str, gt_boxes: Sequence[Sequence[float]], convention: str, sent_size,
                       image_size) -> float:
    """The graded consistency penalty (``box_reward = "giou"``, see the module docstring), >= 0."""
    if not gt_boxes:
        return 0.0
    _, preds = predicted_boxes_original(text, convention, sent_size, image_size)
    gts = [tuple(g) for g in gt_boxes]
    # all pairs by decreasing GIoU, ties by prediction then ground-truth index (as match_boxes breaks them)
    ranked = sorted((-giou(p, g), i, j) for i, p in enumerate(preds) for j, g in enumerate(gts))
    quality = [0.0] * len(gts)  # an unpaired ground-truth box keeps 0: the full 0.2
    for i, j, gi in take_one_to_one((i, j, -neg) for neg, i, j in ranked):
        # GIoU <= IoU <= 0.5 here, so (GIoU + 1) / 1.5 lies in [0, 1]
        quality[j] = 1.0 if iou(preds[i], gts[j]) > MATCH_IOU else (gi + 1.0) / 1.5
    return sum(PENALTY_PER_MISSED_BOX * (1.0 - q) for q in quality)


def graded_consistency_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs) -> list[float]:
    """Minus the graded penalty of every completion (``box_reward = "giou"``)."""
    return _penalties(completions, kwargs, graded_box_penalty, "graded_consistency_reward")


def graded_anomaly_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs) -> list[float]:
    """Accuracy + the graded consistency penalty (``box_reward = "giou"``; not the paper's)."""
    acc = accuracy_reward(prompts, completions, **kwargs)
    pen = graded_consistency_reward(prompts, completions, **kwargs)
    return [a + p for a, p in zip(acc, pen)]


#: ``grpo.box_reward`` -> the reward GRPO optimises; "paper" is Anomaly-R1's
BOX_REWARDS = {"paper": anomaly_reward, "giou": graded_anomaly_reward}
