"""Provider ``detector``: PaDiM / PatchCore behind the registry, for code that holds a model object.

Classical detectors do not answer prompts: they fit per category on normal training images and emit
scores and maps, so a whole manifest is their unit of work, not a request. :meth:`evaluate` runs
:func:`mmrbench.baselines.evaluate.evaluate_detector`; :meth:`generate` exists only to satisfy the
:class:`ModelAPI` interface and answers every request with an error line saying how to run them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mmrbench.adapters.base import ModelAPI, Request, Response
from mmrbench.baselines.recipes import canonical_method, resolve_recipe


class DetectorModel(ModelAPI):
    provider = "detector"
    convention = "pixel"
    fixed_convention = True  # boxes from the score-map contours, in original pixels

    def __init__(self, model: str, *, recipe: dict | str | None = None, weights: str | None = None,
                 device: str = "cpu", cache_dir: str | None = None, **kwargs: Any):
        self.method = canonical_method(model)
        super().__init__(self.method)
        self.recipe = resolve_recipe(self.method, recipe)  # validated now: a bad recipe fails at creation
        self.weights = weights
        self.device = device
        self.cache_dir = cache_dir

    def evaluate(self, manifest, samples, out_dir: str | Path, *, progress: bool = True):
        """Fit per category, score, write predictions.jsonl and result.json; returns the Result."""
        from mmrbench.baselines.evaluate import evaluate_detector

        return evaluate_detector(self.method, manifest, list(samples), Path(out_dir), recipe=self.recipe,
                                 weights=self.weights, device=self.device, progress=progress,
                                 cache_dir=self.cache_dir)

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        msg = (f"'{self.method}' is a classical detector, not a text model: run it with "
               f"`mmrbench eval --model {self.method} --data MANIFEST --out RUN` or DetectorModel.evaluate()")
        return [Response(text=None, status="error", error=msg) for _ in requests]

    def describe(self) -> dict[str, Any]:
        return {"provider": self.provider, "model_id": self.method, "convention": self.convention,
                "kind": "detector", "backbone": self.recipe["backbone"]["name"],
                "pretrained": bool(self.weights or self.recipe["backbone"].get("weights"))}
