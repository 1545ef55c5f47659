"""Prompts of protocol ``mmr-ad-v1``.

The wording is ours; what it asks for follows the paper's Table 2: compare the inspected image
with a normal reference, reason first, then answer Yes/No with boxes and anomaly labels in a fixed
format. The evaluation prompt carries no hint; the hint variant (coordinates and labels of the
ground truth, drawn as red boxes) exists only for generating reasoning texts. Changing any text
here changes the protocol: bump ``PROMPT_VERSION``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from mmrbench.data.schema import Box, Sample

PROMPT_VERSION = "1"
VARIANTS = ("default", "no_reference", "domain_knowledge")

ANSWER_FORMAT = (
    "<think>your step-by-step inspection</think>"
    "<answer>Yes. {'bbox_2d': [x1, y1, x2, y2], 'label': 'anomaly type'}, ...</answer>"
    " when the product is defective, or <think>your step-by-step inspection</think><answer>No.</answer>"
    " when it is not"
)

SYSTEM_PROMPT = (
    "You are an expert visual inspector for industrial quality control. You examine product images "
    "and decide whether the product shows any anomaly (a defect such as a scratch, crack, hole, stain, "
    "deformation, contamination, or a missing, misplaced or wrong component). Reason carefully before "
    "you answer, and report every anomalous region with a tight bounding box."
)

_USER_WITH_REFERENCE = (
    "The first image shows a normal, defect-free {category} sample. The second image shows the "
    "{category} sample to inspect. Compare the second image with the normal one and decide whether "
    "the second image contains any anomaly. If it does, give a bounding box [x1, y1, x2, y2] on the "
    "second image and a short anomaly label for each anomalous region. First write your reasoning "
    "inside <think></think>, then the final answer inside <answer></answer>, in this format: {fmt}."
)

_USER_NO_REFERENCE = (
    "The image shows a {category} sample. Decide whether it contains any anomaly. If it does, give a "
    "bounding box [x1, y1, x2, y2] on the image and a short anomaly label for each anomalous region. "
    "First write your reasoning inside <think></think>, then the final answer inside "
    "<answer></answer>, in this format: {fmt}."
)

_DOMAIN_KNOWLEDGE = "Domain knowledge: on {category} samples, these types of anomalies may occur: {labels}."

_HINT = (
    " Hint for writing the reasoning: the image to inspect is {verdict}.{regions} Write the reasoning "
    "as if you found this yourself by comparing the two images: never mention the hint, red boxes or "
    "given coordinates."
)


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: system text, user text, and the images in the order they are sent."""

    system: str
    user: str
    images: tuple[str, ...] = field(default_factory=tuple)  # paths relative to the manifest root

    @property
    def sha256(self) -> str:
        return hashlib.sha256((self.system + "\x00" + self.user).encode()).hexdigest()


def readable_category(category: str) -> str:
    return category.replace("_", " ").replace("-", " ").strip()


def domain_knowledge_sentence(category: str, labels: Iterable[str]) -> str:
    uniq = sorted({lab.strip() for lab in labels if lab and lab.strip()})
    if not uniq:
        return ""
    return _DOMAIN_KNOWLEDGE.format(category=readable_category(category), labels=", ".join(uniq))


def category_anomaly_labels(samples: Iterable[Sample]) -> dict[tuple[str, str], list[str]]:
    """Distinct anomaly labels per (subdataset, category): the domain knowledge of the paper."""
    out: dict[tuple[str, str], set[str]] = {}
    for s in samples:
        out.setdefault((s.subdataset, s.category), set()).update(b.label for b in s.boxes if b.label)
    return {k: sorted(v) for k, v in out.items()}


def format_boxes(boxes: Sequence[Box], coords: Sequence[Sequence[float]] | None = None) -> str:
    """Boxes in the answer format; ``coords`` overrides positions (e.g. in a model's frame)."""
    parts = []
    for i, b in enumerate(boxes):
        c = coords[i] if coords is not None else b.xyxy
        nums = ", ".join(str(int(round(v))) for v in c)
        label = b.label.replace("'", "\u2019")
        parts.append(f"{{'bbox_2d': [{nums}], 'label': '{label}'}}")
    return ", ".join(parts)


def format_answer(is_anomalous: bool, boxes: Sequence[Box] = (), coords=None) -> str:
    """The ``<answer>`` block for a ground truth (training targets, hints)."""
    if not is_anomalous:
        return "<answer>No.</answer>"
    return f"<answer>Yes. {format_boxes(boxes, coords)}</answer>"


def build_prompt(sample: Sample, variant: str = "default", *, domain_labels: Sequence[str] | None = None,
                 hint: bool = False, hint_coords: Sequence[Sequence[float]] | None = None,
                 opposite_hint: bool = False) -> Prompt:
    """Render the prompt for one sample.

    ``variant`` is ``default`` (reference first, query second), ``no_reference`` (query only) or
    ``domain_knowledge`` (default plus the category's anomaly types). ``hint`` adds the ground truth
    for reasoning-text generation; ``opposite_hint`` states the wrong verdict (GRPO negatives).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown prompt variant '{variant}' (known: {', '.join(VARIANTS)})")
    cat = readable_category(sample.category)
    use_ref = variant != "no_reference" and sample.reference is not None
    if use_ref:
        user = _USER_WITH_REFERENCE.format(category=cat, fmt=ANSWER_FORMAT)
        images: tuple[str, ...] = (sample.reference, sample.image)  # type: ignore[assignment]
    else:
        user = _USER_NO_REFERENCE.format(category=cat, fmt=ANSWER_FORMAT)
        images = (sample.image,)
    if variant == "domain_knowledge":
        sentence = domain_knowledge_sentence(sample.category, domain_labels or [])
        if sentence:
            user = user + " " + sentence
    if hint or opposite_hint:
        anomalous = sample.is_anomalous != opposite_hint
        if anomalous and sample.is_anomalous:
            regions = " Its anomalous regions (marked with red boxes) are: " + format_boxes(sample.boxes, hint_coords) + "."
        else:
            regions = ""
        verdict = "abnormal" if anomalous else "normal, with no anomaly"
        user = user + _HINT.format(verdict=verdict, regions=regions)
    return Prompt(SYSTEM_PROMPT, user, images)
