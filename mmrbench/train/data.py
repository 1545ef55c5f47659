"""Manifest samples -> chat training examples (reference + query images, Table-2 prompt, target).

The prompt is :func:`mmrbench.prompts.build_prompt`, the same the evaluation sends, and the chat
is rendered by :mod:`mmrbench.adapters.hf_inputs`, the same code the ``hf`` provider uses, so a
trained adapter sees at evaluation exactly the token layout it was trained on.

Targets: the sample's verified ``reasoning`` when present (its ``<think>`` kept, its ``<answer>``
rewritten from the ground truth), else a short templated think/answer. Either way the answer's
boxes are written in the *policy's frame*: Qwen2.5-VL writes absolute pixels of the image as it was
resized for the vision tower, so a target box is ``coords.from_original(box, "pixel", sent_size,
original_size)`` with ``sent_size`` from the processor's own resize rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mmrbench.adapters.base import ImagePart, Message, TextPart
from mmrbench.coords import from_original
from mmrbench.vision.images import load_rgb
from mmrbench.data.schema import Sample
from mmrbench.prompts import build_prompt, category_anomaly_labels, format_answer, readable_category

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.S | re.I)


@dataclass
class DataOptions:
    """How samples become examples (the Table-5 ablation switches that touch the data)."""

    prompt_variant: str = "default"      # default | no_reference | domain_knowledge
    answer_only: bool = False            # ablation "no reasoning text": target is the <answer> block only
    use_reasoning: bool = True           # use the manifest's verified reasoning when present
    convention: str = "pixel"            # how the policy writes boxes (Qwen2.5-VL: pixels of the resized image)


@dataclass
class Example:
    sample: Sample
    messages: list[Message]              # system + user (images then text), no assistant turn
    target: str                          # assistant text (think + answer)
    image_size: tuple[int, int]          # original (w, h) of the query
    sent_size: tuple[int, int]           # (w, h) of the query as the policy sees it
    convention: str = "pixel"
    extra: dict[str, Any] = field(default_factory=dict)

    def reward_columns(self) -> dict[str, Any]:
        """The columns :mod:`mmrbench.train.rewards` reads, for this example."""
        return {"label": self.sample.label, "gt_boxes": [list(b.xyxy) for b in self.sample.boxes],
                "image_size": self.image_size, "sent_size": self.sent_size, "convention": self.convention}


def templated_think(sample: Sample) -> str:
    """A short, truthful reasoning for samples without a verified one (cold-start fallback)."""
    cat = readable_category(sample.category)
    if not sample.is_anomalous:
        return f"<think>The {cat} matches the normal reference; I see no defect.</think>"
    labels = sorted({b.label for b in sample.boxes if b.label}) or ["defect"]
    n = len(sample.boxes)
    return (f"<think>Compared with the normal reference, the {cat} shows {n} anomalous "
            f"region{'s' if n != 1 else ''}: {', '.join(labels)}.</think>")


def target_text(sample: Sample, sent_size: tuple[int, int], opts: DataOptions) -> str:
    coords = [from_original(b.xyxy, opts.convention, sent_size, (sample.width, sample.height)) for b in sample.boxes]
    answer = format_answer(sample.is_anomalous, sample.boxes, coords)
    if opts.answer_only:
        return answer
    think = None
    if opts.use_reasoning and sample.reasoning:
        m = _THINK_RE.search(sample.reasoning)
        think = f"<think>{m.group(1).strip()}</think>" if m else None
    return (think or templated_think(sample)) + answer


def build_messages(sample: Sample, root: Path, variant: str = "default", *,
                   domain_labels: Sequence[str] | None = None, opposite_hint: bool = False) -> list[Message]:
    """System + user turn for one sample: images (reference first, query second) then the text.

    The evaluation's own :func:`mmrbench.requests_build.build_request` makes the messages, so
    training and evaluation prompts cannot drift apart; only the opposite-hint prompt (GRPO
    negatives, never evaluated) is assembled here, in the same layout.
    """
    if not opposite_hint:
        from mmrbench.requests_build import build_request

        labels = {(sample.subdataset, sample.category): list(domain_labels or [])}
        return build_request(sample, root, variant=variant, domain_labels=labels).messages
    prompt = build_prompt(sample, variant, domain_labels=domain_labels, opposite_hint=True)
    parts: list = [ImagePart(load_rgb(Path(root) / rel, sample_id=sample.id), path=rel) for rel in prompt.images]
    parts.append(TextPart(prompt.user))
    return [Message("system", prompt.system), Message("user", parts)]


def policy_sent_size(processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
    """Size of the query as the policy sees it (the processor's resize rule; unresized otherwise)."""
    from mmrbench.adapters.qwen_vision import resize_params, sent_size

    return sent_size(image_size, resize_params(getattr(processor, "image_processor", None)))


class ExampleBuilder:
    """Builds examples lazily (images load when an example is needed, not for the whole manifest)."""

    def __init__(self, samples: Sequence[Sample], root: Path, processor: Any, opts: DataOptions,
                 all_samples: Sequence[Sample] | None = None):
        self.samples = list(samples)
        self.root = Path(root)
        self.processor = processor
        self.opts = opts
        # domain knowledge = distinct anomaly labels of the category, over the whole manifest
        self.domain = category_anomaly_labels(all_samples if all_samples is not None else samples)

    def __len__(self) -> int:
        return len(self.samples)

    def domain_labels(self, s: Sample) -> list[str]:
        return self.domain.get((s.subdataset, s.category), [])

    def messages(self, s: Sample, *, opposite_hint: bool = False) -> list[Message]:
        return build_messages(s, self.root, self.opts.prompt_variant, domain_labels=self.domain_labels(s),
                              opposite_hint=opposite_hint)

    def example(self, i: int) -> Example:
        s = self.samples[i]
        size = (s.width, s.height)
        sent = policy_sent_size(self.processor, size)
        return Example(sample=s, messages=self.messages(s), target=target_text(s, sent, self.opts),
                       image_size=size, sent_size=sent, convention=self.opts.convention)
