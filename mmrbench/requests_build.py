"""Sample -> Request: the prompt of protocol ``mmr-ad-v1`` with its images loaded.

Images are loaded here (in the worker that sends the request, so loading overlaps network waits)
through :func:`mmrbench.vision.images.load_rgb`, whose errors name the file and the sample; the runner
turns such an error into an ``error`` line for that sample instead of stopping the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart
from mmrbench.vision.images import ImageLoadError, load_rgb
from mmrbench.data.schema import Sample
from mmrbench.prompts import VARIANTS, build_prompt


@dataclass
class FileImagePart(ImagePart):
    """An image exactly as decoded from ``file`` (not drawn on, not resized): remote providers may
    send the file's own bytes instead of re-encoding it."""

    file: str | None = None


def build_request(sample: Sample, root: str | Path, *, variant: str = "default",
                  domain_labels: Mapping[tuple[str, str], Sequence[str]] | None = None,
                  config: GenerationConfig | None = None) -> Request:
    """System message, then one user message: the images in prompt order (reference first, query
    second), then the instruction text."""
    labels = None
    if variant == "domain_knowledge":
        labels = (domain_labels or {}).get((sample.subdataset, sample.category), [])
    prompt = build_prompt(sample, variant, domain_labels=labels)
    root = Path(root)
    parts: list = []
    for rel in prompt.images:
        im = load_rgb(root / rel, sample_id=sample.id)
        if rel == sample.image and im.size != (sample.width, sample.height):
            # the boxes are in the manifest's frame: scoring them against another would be silently wrong
            raise ImageLoadError(f"image {root / rel} is {im.width}x{im.height} but the manifest says "
                                 f"{sample.width}x{sample.height} (sample '{sample.id}'); fix the manifest "
                                 f"('mmrbench data check' lists every mismatch)")
        parts.append(FileImagePart(im, path=rel, file=str(root / rel)))
    parts.append(TextPart(prompt.user))
    return Request(sample.id, [Message("system", prompt.system), Message("user", parts)],
                   config or GenerationConfig())


def prompt_template_sha256(variant: str) -> str:
    """A hash of the prompt *templates* of a variant (category-independent), for result.json."""
    import hashlib

    if variant not in VARIANTS:
        raise ValueError(variant)
    h = hashlib.sha256()
    for label, boxes in (("normal", []), ("anomalous", None)):
        from mmrbench.data.schema import Box
        s = Sample(id="x", subdataset="{subdataset}", category="{category}", split="test", image="q.png",
                   label=label, width=1, height=1, reference="r.png",
                   boxes=boxes if boxes is not None else [Box(0, 0, 1, 1, "{label}")])
        p = build_prompt(s, variant, domain_labels=["{label}"])
        h.update(p.sha256.encode())
    return h.hexdigest()
