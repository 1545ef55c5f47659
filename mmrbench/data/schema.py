"""Typed records for one benchmark sample.

The manifest stores ``boxes`` and ``box_labels`` as parallel lists (the public format); in memory
each :class:`Box` carries its own label so code never has to keep two lists in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LABELS = ("normal", "anomalous")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in original-image pixels, x2/y2 exclusive."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str = ""

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)


@dataclass
class Sample:
    """One manifest line. Paths are relative to the manifest's folder."""

    id: str
    subdataset: str
    category: str
    split: str
    image: str
    label: str
    width: int
    height: int
    reference: str | None = None
    boxes: list[Box] = field(default_factory=list)
    mask: str | None = None
    reasoning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_anomalous(self) -> bool:
        return self.label == "anomalous"

    @property
    def anomaly_types(self) -> list[str]:
        return [b.label for b in self.boxes]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "subdataset": self.subdataset,
            "category": self.category,
            "split": self.split,
            "image": self.image,
            "reference": self.reference,
            "label": self.label,
            "width": self.width,
            "height": self.height,
            "boxes": [[_num(b.x1), _num(b.y1), _num(b.x2), _num(b.y2)] for b in self.boxes],
            "box_labels": [b.label for b in self.boxes],
        }
        if self.mask is not None:
            d["mask"] = self.mask
        if self.reasoning is not None:
            d["reasoning"] = self.reasoning
        d.update(self.extra)
        return d


def _num(v: float) -> float | int:
    """Write integral coordinates as ints so manifests stay compact and byte-stable."""
    return int(v) if float(v).is_integer() else float(v)
