"""The resumable reasoning-text pipeline behind ``mmrbench data textgen``.

For every selected sample: a hinted request (red boxes + coordinates in the model's frame), and with
``negatives`` a few opposite-hint requests. Raw answers are appended to ``<out>.textgen.jsonl`` as
they arrive (one :class:`~mmrbench.predictions.Prediction` line each, fsynced), so a crash loses at
most the answers in flight and a rerun asks only for what is missing. Failed requests are recorded
but never count as done. Verification always runs over the whole raw file, so the output manifest
and the report reflect every answer collected so far (and changing a threshold needs no new calls).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from mmrbench.adapters.base import GenerationConfig, ImagePart, Message, Request, TextPart
from mmrbench.data.manifest import Manifest, write_manifest
from mmrbench.data.schema import Sample
from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.predictions import Prediction, PredictionWriter
from mmrbench.prompts import PROMPT_VERSION
from mmrbench.textgen.hints import build_hint_inputs, hint_coords, hinted_boxes, planned_sent_size
from mmrbench.textgen.negatives import negative_config, negative_id
from mmrbench.textgen.verify import (IOU_THRESHOLD, REASONS, SIM_THRESHOLD, Frame, Verdict, verify_negative,
                                     verify_text)

if TYPE_CHECKING:  # pragma: no cover
    from mmrbench.textgen.report import TextgenReport

DEFAULT_CONFIG = GenerationConfig(max_new_tokens=1024, temperature=0.0)


@dataclass
class TextgenOptions:
    split: str | None = None                 # None: train and test
    subdatasets: Sequence[str] | None = None
    limit: int | None = None                 # first N selected samples (after the split filter)
    negatives: bool = False
    num_negatives: int = 2
    concurrency: int | None = None
    config: GenerationConfig = field(default_factory=lambda: dataclasses.replace(DEFAULT_CONFIG))
    negative_temperature: float = 1.0
    iou_threshold: float = IOU_THRESHOLD
    sim_threshold: float = SIM_THRESHOLD
    variant: str = "default"
    progress: bool = True


@dataclass
class Job:
    """One request to make: the true-hint text of a sample, or its k-th opposite-hint negative."""

    rid: str
    sample: Sample
    kind: str  # "positive" | "negative"
    index: int = 0

    @property
    def id(self) -> str:  # the runner's dispatch keys items by ``id``
        return self.rid


def raw_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + ".textgen.jsonl")


def report_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + ".textgen-report.json")


def select_samples(manifest: Manifest, opts: TextgenOptions) -> tuple[list[Sample], list[Sample]]:
    """(samples to generate for, samples skipped because nothing can verify them: anomalous without
    ground-truth boxes, which a hint cannot point at)."""
    chosen = manifest.select(split=opts.split, subdatasets=opts.subdatasets)
    usable = [s for s in chosen if not (s.is_anomalous and not s.boxes)]
    skipped = [s for s in chosen if s.is_anomalous and not s.boxes]
    if opts.limit is not None:
        usable = usable[: max(0, opts.limit)]
    return usable, skipped


def plan_jobs(samples: Iterable[Sample], opts: TextgenOptions) -> list[Job]:
    jobs = []
    for s in samples:
        jobs.append(Job(s.id, s, "positive"))
        if opts.negatives:
            jobs += [Job(negative_id(s.id, k), s, "negative", k) for k in range(opts.num_negatives)]
    return jobs


def hint_meta(job: Job, model: Any) -> dict[str, Any]:
    """What a raw line records besides the answer: enough to verify it later without the model
    (the hint as written, the planned query size), and which sample and kind it belongs to."""
    s = job.sample
    size = planned_sent_size(model, (s.width, s.height))
    coords: list = []
    if job.kind == "positive" and s.is_anomalous:
        coords = [list(c) for c in hint_coords(s.boxes, model.convention, size, (s.width, s.height))]
    return {"sample_id": s.id, "kind": job.kind, "planned_size": list(size), "hint": coords}


def build_request(job: Job, model: Any, root: Path, opts: TextgenOptions) -> Request:
    """The hinted (or opposite-hinted) request of a job; images load here, inside the worker."""
    s = job.sample
    size = planned_sent_size(model, (s.width, s.height))
    hi = build_hint_inputs(s, root, convention=model.convention, sent_size=size,
                           opposite=job.kind == "negative", variant=opts.variant)
    content: list = [ImagePart(im, path) for im, path in zip(hi.images, hi.image_paths)]
    content.append(TextPart(hi.prompt.user))
    cfg = negative_config(opts.config, job.index, opts.negative_temperature) if job.kind == "negative" else opts.config
    return Request(job.rid, [Message("system", hi.prompt.system), Message("user", content)], cfg)


def generator_name(model: Any) -> str:
    d = model.describe() if hasattr(model, "describe") else {}
    return f"{d.get('provider', getattr(model, 'provider', '?'))}:{d.get('model_id', getattr(model, 'model', '?'))}"


def collect(model: Any, manifest: Manifest, out: str | os.PathLike,
            opts: TextgenOptions) -> tuple[list[Job], dict[str, Prediction]]:
    """Ask the model for every job not answered yet; returns all jobs and every raw answer.

    Dispatch is the evaluation runner's (bounded daemon threads for API providers, batches for local
    engines, a failed request recorded as ``error`` and asked again on the next run).
    """
    from tqdm import tqdm

    from mmrbench.dispatch import dispatch_batches, dispatch_threads, prediction_from_response
    from mmrbench.runner import load_latest, write_compact

    samples, _ = select_samples(manifest, opts)
    jobs = plan_jobs(samples, opts)
    by_id = {j.rid: j for j in jobs}
    rp = raw_path(out)
    raw = load_latest(rp)
    name = generator_name(model)
    others = sorted({str(p.extra.get("generator")) for p in raw.values()
                     if p.extra.get("generator") not in (None, name)})
    if others:
        raise ConfigError(f"{rp} holds answers of {', '.join(others)}, not {name}: use another --out or delete it")
    todo = [j for j in jobs if j.rid not in raw or raw[j.rid].status == "error"]
    if not todo:
        return jobs, raw
    convention = model.convention
    root = manifest.root

    def answer(job: Job) -> Prediction:
        try:
            req = build_request(job, model, root, opts)
        except MMRBenchError as exc:
            return Prediction(job.rid, None, "error", str(exc), convention=convention)
        resps = model.generate([req])
        if not resps:
            return Prediction(job.rid, None, "error", "provider returned no response", convention=convention)
        return prediction_from_response(job.rid, resps[0], convention)

    bar = tqdm(total=len(todo), desc="textgen", unit="req", disable=not opts.progress, dynamic_ncols=True,
               file=sys.stderr)
    errors = 0
    writer = PredictionWriter(rp)
    try:
        def record(pred: Prediction) -> None:
            nonlocal errors
            pred.extra.update(hint_meta(by_id[pred.id], model))
            pred.extra["generator"] = name
            writer.write(pred)
            raw.pop(pred.id, None)
            raw[pred.id] = pred
            errors += pred.status == "error"
            bar.update(1)
            if errors:
                bar.set_postfix(errors=errors, refresh=False)

        batch = max(1, int(getattr(model, "batch_size", 1) or 1))
        if batch == 1:
            k = max(1, int(opts.concurrency or getattr(model, "max_concurrency", 1) or 1))
            dispatch_threads(todo, answer, record, k, convention)
        else:
            dispatch_batches(todo, model, record, batch, convention, lambda j: build_request(j, model, root, opts))
    finally:
        writer.close()
        bar.close()
    write_compact(rp, raw, [j.rid for j in jobs])  # one line per id in plan order (readers let the latest win anyway)
    return jobs, raw


def _frame(pred: Prediction, sample: Sample) -> Frame:
    planned = pred.extra.get("planned_size")
    sent = pred.query_size or (tuple(planned) if planned else None)
    return Frame(pred.convention or "pixel", sent, (sample.width, sample.height))


def verify_all(jobs: Sequence[Job], raw: dict[str, Prediction], similarity, opts: TextgenOptions) -> dict[str, Verdict]:
    """A verdict for every job that has an answer (or a recorded failure)."""
    out: dict[str, Verdict] = {}
    for job in jobs:
        pred = raw.get(job.rid)
        if pred is None:
            continue
        s = job.sample
        frame = _frame(pred, s)
        if job.kind == "negative":
            out[job.rid] = verify_negative(s, pred.response, frame=frame, status=pred.status)
            continue
        refs = None
        hint = pred.extra.get("hint")
        planned = pred.extra.get("planned_size")
        if s.is_anomalous and hint and planned and len(hint) == len(s.boxes):
            # what the model was told, in original pixels (same frame the hint was written in)
            refs = hinted_boxes(hint, frame.convention, tuple(planned), (s.width, s.height))
        v = verify_text(s, pred.response, frame=frame, reference_boxes=refs, similarity=similarity,
                        status=pred.status, iou_threshold=opts.iou_threshold, sim_threshold=opts.sim_threshold)
        if pred.status == "error" and pred.error:
            v.detail = pred.error[:300]
        if planned and pred.query_size and tuple(planned) != pred.query_size:
            v.frame_mismatch = True
            v.detail = (v.detail + "; " if v.detail else "") + (
                f"adapter sent {pred.query_size[0]}x{pred.query_size[1]}, hint was written for {planned[0]}x{planned[1]}")
        out[job.rid] = v
    return out


def relocate(sample: Sample, src_root: Path, dst_root: Path) -> Sample:
    """Paths of a sample rewritten relative to another folder (the output manifest's)."""
    if src_root.resolve() == dst_root.resolve():
        return dataclasses.replace(sample, extra=dict(sample.extra))

    def rel(p: str) -> str:
        return Path(os.path.relpath((src_root / p).resolve(), dst_root.resolve())).as_posix()

    def rel_opt(p: str | None) -> str | None:
        return None if p is None else rel(p)

    return dataclasses.replace(sample, image=rel(sample.image), reference=rel_opt(sample.reference),
                               mask=rel_opt(sample.mask), extra=dict(sample.extra))


def build_output(manifest: Manifest, jobs: Sequence[Job], verdicts: dict[str, Verdict], out: Path,
                 opts: TextgenOptions, generator: str) -> list[Sample]:
    """Every input sample, with a verified text in ``reasoning`` and kept negatives in ``negatives``.
    A sample whose new text failed keeps what it had."""
    by_sample: dict[str, list[Job]] = defaultdict(list)
    for j in jobs:
        by_sample[j.sample.id].append(j)
    out_samples = []
    for s in manifest.samples:
        s2 = relocate(s, manifest.root, out.parent)
        for j in by_sample.get(s.id, []):
            v = verdicts.get(j.rid)
            if v is None or not v.kept:
                continue
            if j.kind == "positive":
                s2.reasoning = v.text
                s2.extra["reasoning_source"] = {"generator": generator, "prompt_version": PROMPT_VERSION,
                                                "coords": "original pixels"}
        if opts.negatives and s.id in by_sample:
            negs = [verdicts[j.rid].text for j in by_sample[s.id]
                    if j.kind == "negative" and j.rid in verdicts and verdicts[j.rid].kept]
            s2.extra["negatives"] = negs
        out_samples.append(s2)
    return out_samples


def run_textgen(model: Any, manifest: Manifest, out: str | os.PathLike, opts: TextgenOptions | None = None,
                similarity=None) -> "TextgenReport":
    """Collect answers (resuming), verify them all, write the output manifest and the report."""
    from mmrbench.textgen.report import build_report

    opts = opts or TextgenOptions()
    out = Path(out)
    if out.is_dir():
        out = out / "manifest.jsonl"
    if out.resolve() == manifest.path.resolve():
        raise ConfigError("--out must differ from --data (the input manifest is never overwritten)")
    jobs, raw = collect(model, manifest, out, opts)
    if similarity is None and any(j.sample.is_anomalous for j in jobs if j.kind == "positive"):
        from mmrbench.textgen.similarity import default_similarity
        similarity = default_similarity()
    sim_fn = similarity.pairs if similarity is not None and hasattr(similarity, "pairs") else similarity
    verdicts = verify_all(jobs, raw, sim_fn, opts)
    name = generator_name(model)
    samples = build_output(manifest, jobs, verdicts, out, opts, name)
    sha = write_manifest(out, samples)
    _, skipped = select_samples(manifest, opts)
    report = build_report(jobs, verdicts, skipped=skipped, model=model, generator=name, manifest=manifest,
                          out=out, raw=raw_path(out), out_sha256=sha, opts=opts, similarity=similarity)
    report.write(report_path(out))
    return report


__all__ = ["TextgenOptions", "Job", "run_textgen", "collect", "verify_all", "raw_path", "report_path", "REASONS"]
