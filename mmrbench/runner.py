"""The evaluation runner: manifest + model card -> predictions.jsonl -> result.json.

Durability is the design centre. Every answer is appended to ``predictions.jsonl`` (flushed and
fsynced) the moment it arrives, so a crash, Ctrl-C or SIGKILL loses at most the answers in flight.
A re-run with the same ``--out`` skips every id already answered with a non-error status and asks
again for the rest: failures are never cached. A re-asked id appends a new line; the file is
rewritten compactly (one line per id, the latest winning, manifest order) when the run completes,
and every reader here also lets the latest line win, so a half-finished run is scored correctly too.

API providers run in a pool of daemon threads (bounded concurrency, requests built inside the
workers so image loading overlaps network waits); local engines get batches of ``batch_size``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mmrbench import PROTOCOL
from mmrbench.cards import ModelCard
from mmrbench.data.manifest import Manifest, file_sha256, read_manifest
from mmrbench.data.schema import Sample
from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.predictions import (Prediction, PredictionsError, PredictionWriter, load_latest, parse_prediction,
                                  predictions_bytes)
from mmrbench.rundir import RunLock, atomic_write_bytes, atomic_write_json, prepare_run_dir

PREDICTIONS = "predictions.jsonl"
RESULT = "result.json"
RUN = "run.json"


@dataclass
class EvalOptions:
    split: str = "test"
    subdatasets: list[str] | None = None
    limit: int | None = None
    variant: str = "default"
    shard: tuple[int, int] | None = None
    concurrency: int | None = None
    progress: bool = True
    retry: Any = None  # RetryPolicy; None = the provider's default
    command: list[str] | None = None
    device: str = "cpu"
    weights: str | None = None
    recipe: str | None = None
    quiet: bool = False
    #: stop sending once the run folder's estimated spend (US dollars) would reach this; resumable
    max_cost: float | None = None
    #: adaptive concurrency (AIMD on 429s) for API providers; ``min_concurrency`` is its floor
    adaptive: bool = True
    min_concurrency: int = 1


# -- selection -------------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got '{text}'")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


def shard_of(sample_id: str, n: int) -> int:
    """Stable shard of an id (same on every machine and Python version, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(sample_id.encode("utf-8")).digest()[:8], "big") % n


def select_samples(manifest: Manifest, *, split: str | None = "test", subdatasets: Sequence[str] | None = None,
                   limit: int | None = None, shard: tuple[int, int] | None = None) -> list[Sample]:
    """Manifest order; ``limit`` takes the first N of the selection, then ``shard`` splits those."""
    if subdatasets:
        unknown = sorted(set(subdatasets) - set(manifest.subdatasets))
        if unknown:
            raise ConfigError(f"unknown subdataset(s) {', '.join(unknown)} (manifest has: {', '.join(manifest.subdatasets)})")
    samples = manifest.select(split=split, subdatasets=subdatasets)
    if limit is not None:
        if limit < 1:
            raise ConfigError("--limit must be positive")
        samples = samples[:limit]
    if shard is not None:
        i, n = shard
        samples = [s for s in samples if shard_of(s.id, n) == i]
    return samples


# -- the predictions file --------------------------------------------------------------------------
def write_compact(path: str | os.PathLike, preds: dict[str, Prediction], order: Sequence[str]) -> list[Prediction]:
    """Rewrite the file atomically with one line per id: ``order`` first, any other ids after."""
    seen = set()
    rows: list[Prediction] = []
    for sid in order:
        if sid in preds and sid not in seen:
            rows.append(preds[sid])
            seen.add(sid)
    rows.extend(pr for sid, pr in preds.items() if sid not in seen)
    atomic_write_bytes(path, predictions_bytes(rows))
    return rows


def prediction_from_response(sample_id: str, resp: Any, convention: str, attempts: int | None = None,
                             run: str | None = None) -> Prediction:
    usage = resp.usage.to_json() if resp.usage is not None else None
    extra: dict[str, Any] = {}
    attempts = attempts or resp.attempts
    if attempts and attempts > 1:
        extra["attempts"] = attempts
    if resp.reasoning:
        extra["reasoning_content"] = resp.reasoning
    if resp.box_key:
        extra["box_key"] = resp.box_key
    status = resp.status if resp.status in ("ok", "refused", "truncated", "error") else "error"
    return Prediction(id=sample_id, response=resp.text, status=status, error=resp.error,
                      image_sizes=resp.image_sizes or None, convention=resp.convention or convention,
                      latency_s=round(resp.latency_s, 4) if resp.latency_s is not None else None,
                      usage=usage, run=run, extra=extra)


# -- provenance -----------------------------------------------------------------------------------
_SECRET_FLAG = re.compile(r"(key|token|secret|password)", re.I)


def scrub_argv(argv: Sequence[str]) -> list[str]:
    """The command line for run.json with anything secret-looking blanked (we take no key flags, but
    a user may pass ``--option api_key=...`` or a URL with credentials)."""
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        if a.startswith("--") and _SECRET_FLAG.search(a):
            if "=" in a:
                out.append(a.split("=", 1)[0] + "=***")
            else:
                out.append(a)
                hide_next = True
            continue
        if "=" in a and _SECRET_FLAG.search(a.split("=", 1)[0]):
            out.append(a.split("=", 1)[0] + "=***")
            continue
        out.append(re.sub(r"(https?://)[^/@\s]+@", r"\1***@", a))
    return out


def fingerprint(card_json: dict, manifest_sha: str, variant: str, shard: tuple[int, int] | None) -> dict:
    """What must match for two runs to share a predictions file: everything that changes an answer
    (a LoRA adapter given as an option, the image preparation) or how it is read (the convention)."""
    return {"manifest_sha256": manifest_sha, "provider": card_json.get("provider"),
            "model_id": card_json.get("model_id"), "convention": card_json.get("convention"),
            "sampling": card_json.get("sampling"), "options": card_json.get("options") or {},
            "image": card_json.get("image") or {}, "prompt_variant": variant,
            "prompt_version": _prompt_version(), "shard": f"{shard[0]}/{shard[1]}" if shard else None}


def run_tag(fp: dict) -> str:
    """The short hash every predictions line carries to say which run it belongs to."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


@dataclass
class RunSummary:
    """How a run ended: the CLI exits 0 only when every selected sample ended answered."""

    n_selected: int
    n_unanswered: int
    first_reason: str | None = None
    #: set when --max-cost stopped the run: (budget, estimated spend) in US dollars
    budget: tuple[float, float] | None = None

    @property
    def complete(self) -> bool:
        return self.n_unanswered == 0

    def line(self) -> str:
        if self.budget is not None:
            cap, spent = self.budget
            return (f"cost budget reached (--max-cost {cap:g} USD, estimated spend {spent:.4f} USD): "
                    f"{self.n_unanswered} of {self.n_selected} samples not answered yet; result.json scores them "
                    f"as wrong; re-running the same command resumes (raise --max-cost to go on)")
        why = f"; first reason: {self.first_reason}" if self.first_reason else ""
        return (f"{self.n_unanswered} of {self.n_selected} samples have no answer{why} "
                f"(result.json was written with them scored as wrong; run the same command to retry them)")


def summarize(samples: Sequence[Sample], preds: dict[str, Prediction]) -> RunSummary:
    unanswered = [s.id for s in samples if s.id not in preds or preds[s.id].status == "error"]
    first = None
    if unanswered:
        p = preds.get(unanswered[0])
        first = (p.error or "error") if p is not None else "no prediction"
        first = f"'{unanswered[0]}': {first}"[:300]
    return RunSummary(len(samples), len(unanswered), first)


class _Spend:
    """The run folder's estimated spend, kept as answers arrive (for --max-cost and run.json)."""

    def __init__(self, card: ModelCard, root: Path, variant: str, domain: Any, samples: Sequence[Sample]):
        from mmrbench.cost import card_prices
        self.prices = card_prices(card)
        self.card, self.root, self.variant, self.domain = card, root, variant, domain
        self.by_id = {s.id: s for s in samples}
        self.max_new = int(card.generation_config().max_new_tokens)
        self.usd = 0.0
        self.usd_this_run = 0.0
        self.n = 0
        self.prior = 0.0  # the projected cost of one answer before any arrived (the dry-run bound)
        self._sizes: dict = {}

    def of(self, pred: Prediction) -> float:
        if self.prices is None:
            return 0.0
        u = pred.usage if isinstance(pred.usage, dict) else None
        if u is not None:
            return self.prices.cost(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
        if pred.status == "error" or pred.id not in self.by_id:
            return 0.0  # a failed request without usage was not billed
        from mmrbench.cost import estimate_sample
        try:
            prompt, _ = estimate_sample(self.card, self.by_id[pred.id], self.root, self.variant, self.domain, self._sizes)
        except MMRBenchError:
            return 0.0
        return self.prices.cost(prompt, self.max_new)

    def add(self, pred: Prediction, this_run: bool = True) -> None:
        c = self.of(pred)
        self.usd += c
        if this_run:
            self.usd_this_run += c
            self.n += 1

    def mean(self) -> float:
        return self.usd_this_run / self.n if self.n else self.prior


def _prompt_version() -> str:
    from mmrbench.prompts import PROMPT_VERSION
    return PROMPT_VERSION


def protocol_json(variant: str) -> dict:
    from mmrbench.requests_build import prompt_template_sha256
    from mmrbench.scoring import LOC_IOU
    return {"name": PROTOCOL, "prompt_variant": variant, "prompt_version": _prompt_version(),
            "prompt_sha256": prompt_template_sha256(variant), "iou_threshold": LOC_IOU}


def dataset_json(manifest: Manifest, samples: Sequence[Sample], split: str | None, limit: int | None,
                 shard: tuple[int, int] | None) -> dict:
    d: dict[str, Any] = {"name": manifest.root.name or manifest.path.stem, "manifest": manifest.path.name,
                         "manifest_sha256": manifest.sha256, "split": split,
                         "subdatasets": sorted({s.subdataset for s in samples}), "n_samples": len(samples)}
    if limit is not None:
        d["limit"] = limit
    if shard is not None:
        d["shard"] = f"{shard[0]}/{shard[1]}"
    return d


def finalize(out_dir: Path, *, card_json: dict, manifest: Manifest, samples: Sequence[Sample],
             preds: dict[str, Prediction], variant: str, split: str | None, limit: int | None,
             shard: tuple[int, int] | None, notes: str | None = None, spend: "_Spend | None" = None):
    """Compact predictions, score them, write result.json; returns (Result, ScoreReport)."""
    from mmrbench.provenance import harness_info, now_iso
    from mmrbench.results import Result, write_result
    from mmrbench.scoring import score_predictions

    pred_path = out_dir / PREDICTIONS
    order = [s.id for s in manifest.samples]
    rows = write_compact(pred_path, preds, order)
    report = score_predictions(samples, rows)
    result = Result(model=card_json, dataset=dataset_json(manifest, samples, split, limit, shard),
                    metrics=report.to_json(), protocol=protocol_json(variant),
                    predictions_sha256=file_sha256(pred_path), harness=harness_info(), date=now_iso(),
                    provenance="run", notes=notes)
    from mmrbench.cost import usage_totals
    usage = usage_totals(rows)
    if usage["n_with_usage"]:
        result.extra["usage"] = usage
    if spend is not None and spend.prices is not None:
        # the answers kept (one per sample), not every attempt: what the scored predictions cost
        result.extra["cost"] = {"usd": round(sum(spend.of(p) for p in rows), 6), **spend.prices.to_json(),
                                "estimated": True}
    write_result(out_dir / RESULT, result)
    return result, report


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data)


def _check_run_dir(out_dir: Path, fp: dict) -> None:
    """A readable run.json of another run names what differs (the predictions' own tags are the
    check that always runs: see :func:`check_origin`)."""
    run_path = out_dir / RUN
    if not run_path.exists():
        return
    try:
        prev = json.loads(run_path.read_text(encoding="utf-8")).get("fingerprint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError):
        return
    if isinstance(prev, dict) and prev != fp:
        diff = sorted(k for k in set(prev) | set(fp) if prev.get(k) != fp.get(k))
        raise ConfigError(f"{out_dir} holds a run with different {', '.join(diff)}: resume needs the same "
                          f"settings; use another --out")


def check_origin(path: Path, preds: dict[str, Prediction], tag: str) -> None:
    """Resume only over lines this very run (same fingerprint) wrote: a line of another run, or of
    no known run (written by hand, or by a harness before run tags), is refused, whatever run.json
    says or whether it exists at all."""
    for p in preds.values():
        if p.run != tag:
            who = f"of another run (run {p.run})" if p.run else "of unknown origin (no run tag)"
            raise ConfigError(f"{path}: sample '{p.id}' holds an answer {who}; resuming would credit it to this "
                              f"model and settings: use another --out, or delete the file to start over")


# -- dispatch ---------------------------------------------------------------------------------------
class _DaemonPool:
    """K daemon worker threads: unlike ThreadPoolExecutor, Ctrl-C never waits for requests in flight
    (their answers are simply not written, and the next run asks again)."""

    _STOP = object()

    def __init__(self, fn: Callable[[Any], Any], k: int):
        self.fn = fn
        self.inq: queue.Queue = queue.Queue()
        self.outq: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._loop, daemon=True, name=f"mmrbench-worker-{i}") for i in range(k)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while True:
            item = self.inq.get()
            if item is self._STOP:
                return
            try:
                self.outq.put((item, self.fn(item), None))
            except BaseException as exc:  # a provider bug must not kill the worker
                self.outq.put((item, None, exc))

    def drain(self) -> int:
        """Drop work not yet started; returns how many items were dropped."""
        n = 0
        while True:
            try:
                item = self.inq.get_nowait()
            except queue.Empty:
                return n
            if item is self._STOP:  # pragma: no cover - only close() queues these
                self.inq.put(item)
                return n
            n += 1

    def close(self) -> None:
        """Drop work not yet started (after Ctrl-C nothing new is sent), then stop the workers."""
        self.drain()
        for _ in self.threads:
            self.inq.put(self._STOP)


def run_eval(card: ModelCard, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
             opts: EvalOptions | None = None, *, model: Any = None):
    """Evaluate one model; returns the :class:`~mmrbench.results.Result` (also written to disk)."""
    from mmrbench.prompts import VARIANTS, category_anomaly_labels
    from mmrbench.provenance import now_iso

    opts = opts or EvalOptions()
    if opts.variant not in VARIANTS:
        raise ConfigError(f"unknown prompt variant '{opts.variant}' (known: {', '.join(VARIANTS)})")
    out = Path(out_dir)
    manifest = read_manifest(manifest_path, check_files=False)
    samples = select_samples(manifest, split=opts.split, subdatasets=opts.subdatasets, limit=opts.limit,
                             shard=opts.shard)
    if not samples:
        raise MMRBenchError(f"no '{opts.split}' samples selected from {manifest.path}"
                            + (f" (shard {opts.shard[0]}/{opts.shard[1]})" if opts.shard else ""))
    prepare_run_dir(out)
    with RunLock(out, opts.command):
        if card.provider == "detector":
            return _run_detector(card, manifest, samples, out, opts)
        return _run_model(card, manifest, samples, out, opts, model)


def _run_model(card: ModelCard, manifest: Manifest, samples: list[Sample], out: Path, opts: EvalOptions,
               model: Any):
    from mmrbench.prompts import category_anomaly_labels
    from mmrbench.provenance import now_iso

    from mmrbench.cards import create_model
    from mmrbench.cost import card_prices
    if opts.max_cost is not None and card_prices(card) is None:
        raise ConfigError(f"--max-cost needs the model's prices: model card '{card.name}' has no "
                          f"price_input_per_mtok / price_output_per_mtok (US dollars per million tokens)")
    if model is None:
        model = create_model(card, retry=opts.retry)
    convention = getattr(model, "convention", card.convention) or card.convention
    card_json = card.to_result_json()
    card_json["convention"] = convention
    for k, v in (model.describe() or {}).items():
        card_json.setdefault(k, v)
    fp = fingerprint(card_json, manifest.sha256, opts.variant, opts.shard)
    _check_run_dir(out, fp)
    tag = run_tag(fp)

    pred_path = out / PREDICTIONS
    existing = load_latest(pred_path)
    check_origin(pred_path, existing, tag)
    done = {sid for sid, p in existing.items() if p.status != "error"}
    todo = [s for s in samples if s.id not in done]
    domain = category_anomaly_labels(manifest.samples) if opts.variant == "domain_knowledge" else None
    config = card.generation_config()
    root = manifest.root

    started = now_iso()
    t0 = time.perf_counter()
    run_info: dict[str, Any] = {
        "command": scrub_argv(opts.command if opts.command is not None else sys.argv),
        "fingerprint": fp, "manifest_path": str(manifest.path.resolve()), "manifest_sha256": manifest.sha256,
        "model": card_json, "selection": {"split": opts.split, "subdatasets": opts.subdatasets, "limit": opts.limit,
                                          "shard": fp["shard"]},
        "prompt_variant": opts.variant, "run_tag": tag, "started": started, "n_selected": len(samples),
        "n_done_before": len(samples) - len(todo), "n_todo": len(todo), "state": "running",
    }
    _write_json(out / RUN, run_info)

    from mmrbench.requests_build import build_request
    # remote providers send files as they are; local engines need pixels, decoded while the request is built
    decode = not getattr(model, "accepts_file_bytes", False)

    def answer(sample: Sample) -> Prediction:
        try:
            req = build_request(sample, root, variant=opts.variant, domain_labels=domain, config=config, decode=decode)
        except MMRBenchError as exc:
            return Prediction(sample.id, None, "error", str(exc), convention=convention, run=tag)
        resps = model.generate([req])
        if not resps:
            return Prediction(sample.id, None, "error", "provider returned no response", convention=convention, run=tag)
        return prediction_from_response(sample.id, resps[0], convention, run=tag)

    counts = {"ok": 0, "refused": 0, "truncated": 0, "error": 0}
    spend = _Spend(card, root, opts.variant, domain, samples)
    for p in existing.values():
        spend.add(p, this_run=False)  # the mean used to project in-flight costs is this run's own
    if opts.max_cost is not None and todo:
        from mmrbench.cost import estimate_sample
        try:
            prompt, _ = estimate_sample(card, todo[0], root, opts.variant, domain)
            spend.prior = spend.prices.cost(prompt, spend.max_new)  # type: ignore[union-attr]
        except MMRBenchError:
            pass
    budget_hit = [opts.max_cost is not None and spend.usd >= opts.max_cost]

    def over_budget(in_flight: int) -> bool:
        """Stop sending when the spend, plus what the requests in flight will likely cost, reaches
        the budget (answers in flight are still written: the spend may pass it by those)."""
        if opts.max_cost is None:
            return False
        if not budget_hit[0] and spend.usd + in_flight * spend.mean() >= opts.max_cost:
            budget_hit[0] = True
        return budget_hit[0]

    bar = _progress(len(todo), card.name, opts.progress and not opts.quiet)
    limiter = None
    writer = PredictionWriter(pred_path, fsync_interval_s=0.5)
    interrupted = False
    try:
        def record(pred: Prediction) -> None:
            writer.write(pred)
            prev = existing.get(pred.id)
            if prev is not None:
                spend.usd -= spend.of(prev)  # replaced: counted as a resume counts it (latest line per sample)
            existing[pred.id] = pred
            spend.add(pred)
            counts[pred.status] = counts.get(pred.status, 0) + 1
            bar.update(1)
            if counts["error"]:
                bar.set_postfix(errors=counts["error"], refresh=False)

        batch = max(1, int(getattr(model, "batch_size", 1) or 1))
        if budget_hit[0]:
            pass  # the folder already spent the budget: ask nothing
        elif batch == 1:
            k = max(1, int(opts.concurrency or card.concurrency or getattr(model, "max_concurrency", 1) or 1))
            if opts.adaptive and hasattr(model, "concurrency_limiter") and k > 1:
                from mmrbench.adapters.retry import AdaptiveConcurrency
                limiter = AdaptiveConcurrency(k, min(k, max(1, opts.min_concurrency)))
                model.concurrency_limiter = limiter
            _dispatch_threads(todo, answer, record, k, convention, tag, stop=over_budget)
        else:
            _dispatch_batches(todo, model, record, batch, convention, lambda s: build_request(
                s, root, variant=opts.variant, domain_labels=domain, config=config, decode=decode), tag,
                stop=over_budget)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        writer.close()
        bar.close()
        wall = time.perf_counter() - t0
        run_info.update({"n_answered": sum(counts.values()), "status_counts": counts, "wall_s": round(wall, 3),
                         "throughput_per_s": round(sum(counts.values()) / wall, 3) if wall > 0 else None,
                         "state": "interrupted" if interrupted else "finishing"})
        if limiter is not None:
            run_info["concurrency"] = limiter.stats()
        if spend.prices is not None:
            run_info["cost"] = {"spent_usd": round(spend.usd, 6), "max_cost_usd": opts.max_cost,
                                "budget_reached": bool(budget_hit[0])}
        _write_json(out / RUN, run_info)
        try:
            model.close()
        except Exception:  # pragma: no cover
            pass

    result, report = finalize(out, card_json=card_json, manifest=manifest, samples=samples, preds=existing,
                              variant=opts.variant, split=opts.split, limit=opts.limit, shard=opts.shard, spend=spend)
    summary = summarize(samples, existing)
    if budget_hit[0] and not summary.complete:
        summary.budget = (float(opts.max_cost), spend.usd)  # type: ignore[arg-type]
    run_info.update({"state": "complete" if summary.complete else "incomplete", "finished": now_iso(),
                     "n_unanswered": summary.n_unanswered, "predictions_sha256": result.predictions_sha256})
    _write_json(out / RUN, run_info)
    result.run_summary = summary  # not serialised: the CLI's exit code
    if not opts.quiet:
        print(f"{card.title} ({opts.variant}) on {manifest.path.name}: {len(samples)} samples, "
              f"{len(todo)} asked this run, {summary.n_unanswered} errors (re-run the same command to retry them)")
        print(report.render("table"))
        print(f"wrote {out / RESULT}")
    return result


def dry_run(card: ModelCard, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
            opts: EvalOptions | None = None) -> str:
    """Estimate what ``run_eval`` would ask and cost, without loading the model, sending a request or
    writing a file. Samples already answered in ``out_dir`` (this same run's lines) are left out,
    as a resume would skip them. Returns the report as text."""
    from mmrbench.cost import card_prices, estimate, image_rule
    from mmrbench.prompts import VARIANTS, category_anomaly_labels

    opts = opts or EvalOptions()
    if opts.variant not in VARIANTS:
        raise ConfigError(f"unknown prompt variant '{opts.variant}' (known: {', '.join(VARIANTS)})")
    if card.provider == "detector":
        raise ConfigError("--dry-run estimates tokens of language models; the classical detectors spend none")
    manifest = read_manifest(manifest_path, check_files=False)
    samples = select_samples(manifest, split=opts.split, subdatasets=opts.subdatasets, limit=opts.limit,
                             shard=opts.shard)
    existing = load_latest(Path(out_dir) / PREDICTIONS) if (Path(out_dir) / PREDICTIONS).is_file() else {}
    done = {sid for sid, p in existing.items() if p.status != "error"}
    todo = [s for s in samples if s.id not in done]
    domain = category_anomaly_labels(manifest.samples) if opts.variant == "domain_knowledge" else None
    est = estimate(card, todo, manifest.root, opts.variant, domain)
    prices = card_prices(card)
    lines = [f"dry run: {card.title} on {manifest.path.name}: {len(samples)} samples selected, "
             f"{len(samples) - len(todo)} already answered, {est.n_requests} to ask",
             f"  input tokens  ~{est.input_tokens:,} (images {est.image_tokens:,} by the {image_rule(card)} rule, "
             f"text at ~4 characters per token)",
             f"  output tokens <= {est.output_tokens_max:,} (max_new_tokens {card.generation_config().max_new_tokens} "
             f"per request)"]
    if prices is None:
        lines.append("  cost: unknown (the model card has no price_input_per_mtok / price_output_per_mtok)")
    else:
        lo = prices.cost(est.input_tokens, 0)
        lines.append(f"  cost: {lo:.4f} USD of input + at most {prices.cost(0, est.output_tokens_max):.4f} USD of output "
                     f"= at most {est.cost(prices):.4f} USD ({prices.input_per_mtok:g} / {prices.output_per_mtok:g} "
                     f"USD per million input / output tokens)")
        if opts.max_cost is not None:
            lines.append(f"  --max-cost {opts.max_cost:g} USD")
    lines.append("  nothing was sent or written")
    return "\n".join(lines)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True,
                smoothing=0.1, file=sys.stderr)


def _dispatch_threads(todo: Sequence[Sample], answer: Callable[[Sample], Prediction],
                      record: Callable[[Prediction], None], k: int, convention: str, tag: str | None = None,
                      stop: Callable[[int], bool] = lambda in_flight: False) -> None:
    if not todo:
        return
    pool = _DaemonPool(answer, k)
    try:
        it = iter(todo)
        inflight = 0
        exhausted = False
        while True:
            while not exhausted and inflight < 2 * k:
                if stop(inflight):
                    exhausted = True
                    inflight -= pool.drain()  # queued but not started: not spent, asked by the next run
                    break
                s = next(it, None)
                if s is None:
                    exhausted = True
                    break
                pool.inq.put(s)
                inflight += 1
            if inflight == 0:
                break
            try:
                sample, pred, exc = pool.outq.get(timeout=0.5)
            except queue.Empty:
                continue
            inflight -= 1
            if exc is not None:
                if isinstance(exc, KeyboardInterrupt):
                    raise exc
                pred = Prediction(sample.id, None, "error", f"{type(exc).__name__}: {exc}", convention=convention,
                                  run=tag)
            record(pred)
    finally:
        pool.close()


def _dispatch_batches(todo: Sequence[Sample], model: Any, record: Callable[[Prediction], None], batch: int,
                      convention: str, build: Callable[[Sample], Any], tag: str | None = None,
                      stop: Callable[[int], bool] = lambda in_flight: False) -> None:
    for i in range(0, len(todo), batch):
        if stop(batch):
            return
        chunk = todo[i:i + batch]
        reqs, ids = [], []
        for s in chunk:
            try:
                reqs.append(build(s))
                ids.append(s.id)
            except MMRBenchError as exc:
                record(Prediction(s.id, None, "error", str(exc), convention=convention, run=tag))
        if not reqs:
            continue
        try:
            resps = model.generate(reqs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the whole batch failed: record each, the next run retries them
            for sid in ids:
                record(Prediction(sid, None, "error", f"{type(exc).__name__}: {exc}", convention=convention, run=tag))
            continue
        if len(resps) != len(reqs):
            for sid in ids:
                record(Prediction(sid, None, "error", f"provider returned {len(resps)} answers for {len(reqs)} requests",
                                  convention=convention, run=tag))
            continue
        for sid, r in zip(ids, resps):
            record(prediction_from_response(sid, r, getattr(model, "convention", convention) or convention, run=tag))


def _run_detector(card: ModelCard, manifest: Manifest, samples: list[Sample], out: Path, opts: EvalOptions):
    try:
        from mmrbench.baselines.evaluate import evaluate_detector
    except ImportError as exc:
        raise ConfigError(f"the classical detectors are not available in this build ({exc})") from None
    from mmrbench.baselines.recipes import resolve_recipe
    from mmrbench.provenance import now_iso
    recipe = opts.recipe or card.options.get("recipe")
    weights = opts.weights or card.options.get("weights")
    resolve_recipe(card.model_id, recipe)  # a bad recipe fails here, before the previous run is touched
    started, t0 = now_iso(), time.perf_counter()
    run_info = {"command": scrub_argv(opts.command if opts.command is not None else sys.argv),
                "manifest_path": str(manifest.path.resolve()), "manifest_sha256": manifest.sha256,
                "model": card.to_result_json(), "selection": {"split": opts.split, "subdatasets": opts.subdatasets,
                                                              "limit": opts.limit, "shard": None},
                "started": started, "n_selected": len(samples), "state": "running"}
    _write_json(out / RUN, run_info)  # no longer "complete" until the new predictions are in place
    result = evaluate_detector(card.model_id, manifest, samples, out, recipe=recipe, weights=weights,
                               device=opts.device, progress=opts.progress and not opts.quiet)
    # The detector scored exactly `samples`; record how they were selected (limit, shard) as text runs
    # do, so that a verifier re-selects the same samples when it re-scores the predictions.
    from mmrbench.results import write_result
    result.dataset.update(dataset_json(manifest, samples, opts.split, opts.limit, opts.shard))
    write_result(out / RESULT, result)
    run_info.update({"finished": now_iso(), "wall_s": round(time.perf_counter() - t0, 3), "state": "complete",
                     "predictions_sha256": result.predictions_sha256})
    _write_json(out / RUN, run_info)  # marked complete last
    result.run_summary = RunSummary(len(samples), 0)
    metrics = getattr(result, "metrics", None)
    if not opts.quiet and isinstance(metrics, dict):
        from mmrbench.report import render_rows
        rows = metrics_rows(metrics)
        if rows:
            print(f"{card.title} on {manifest.path.name}: {len(samples)} samples")
            print(render_rows(rows, "table"))
        print(f"wrote {out / RESULT}")
    return result


def metrics_rows(metrics: dict) -> list[dict]:
    """Table-4 rows (``det/loc`` percent cells) from a result's metrics JSON."""
    from mmrbench.scoring import METRICS
    rows = []
    for name, sub in (metrics.get("subdatasets") or {}).items():
        try:
            cells = {m: f"{100 * sub['det'][m]:.1f}/{100 * sub['loc'][m]:.1f}" for m in METRICS}
        except (KeyError, TypeError):
            continue
        rows.append({"subdataset": name, **cells, "n": sub.get("n"), "invalid": sub.get("invalid"),
                     "missing": sub.get("missing")})
    return rows


# -- merging shards ---------------------------------------------------------------------------------
def merge_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
               manifest_path: str | os.PathLike | None = None, quiet: bool = False):
    """Combine the run folders of ``--shard I/N`` runs into one scored run.

    Checks that all runs share the manifest, model, sampling, prompt and selection, that shards are
    distinct and that no id was answered by two runs; the merged result is scored on the unsharded
    selection, so it equals an unsharded run's result (missing shards show up as missing samples).
    """
    from mmrbench.provenance import now_iso

    if not run_dirs:
        raise ConfigError("merge needs at least one run folder")
    infos = []
    for d in run_dirs:
        p = Path(d) / RUN
        if not p.is_file():
            raise ConfigError(f"{d}: no {RUN} (not a run folder written by 'mmrbench eval')")
        try:
            infos.append((Path(d), json.loads(p.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from None
    first = infos[0][1]
    keys = ("manifest_sha256", "provider", "model_id", "convention", "sampling", "prompt_variant", "prompt_version")
    for d, info in infos[1:]:
        for k in keys:
            if info["fingerprint"].get(k) != first["fingerprint"].get(k):
                raise ConfigError(f"cannot merge: {d} differs from {infos[0][0]} in {k}")
        for k in ("split", "subdatasets", "limit"):
            if info["selection"].get(k) != first["selection"].get(k):
                raise ConfigError(f"cannot merge: {d} differs from {infos[0][0]} in --{k}")
    shards = [info["selection"].get("shard") for _, info in infos]
    if len(infos) > 1 and len(set(shards)) != len(shards):
        raise ConfigError(f"cannot merge: the same shard appears twice ({', '.join(str(s) for s in shards)})")
    ns = {int(s.split("/")[1]) for s in shards if s}
    if len(ns) > 1:
        raise ConfigError(f"cannot merge shards of different splits: {', '.join(str(s) for s in shards)}")

    mpath = Path(manifest_path) if manifest_path else Path(first["manifest_path"])
    manifest = read_manifest(mpath, check_files=False)
    if manifest.sha256 != first["fingerprint"]["manifest_sha256"]:
        raise ConfigError(f"{mpath} is not the manifest the runs used (sha256 differs)")
    sel = first["selection"]
    samples = select_samples(manifest, split=sel.get("split"), subdatasets=sel.get("subdatasets"),
                             limit=sel.get("limit"))
    wanted = {s.id for s in samples}
    merged: dict[str, Prediction] = {}
    owner: dict[str, Path] = {}
    for d, _ in infos:
        for sid, pred in load_latest(d / PREDICTIONS).items():
            if sid not in wanted:
                continue
            if sid in merged:
                raise ConfigError(f"cannot merge: sample '{sid}' was answered in both {owner[sid]} and {d}")
            merged[sid] = pred
            owner[sid] = d
    out = Path(out_dir)
    if out.resolve() in {d.resolve() for d, _ in infos}:
        raise ConfigError("merge --out must be a new folder, not one of the inputs")
    prepare_run_dir(out)
    lock = RunLock(out).acquire()
    card_json = first["model"]
    fp = dict(first["fingerprint"], shard=None)
    # the merged lines belong to the merged (unsharded) run: the same tag an unsharded run has
    merged = {sid: dataclasses.replace(p, run=run_tag(fp)) for sid, p in merged.items()}
    try:
        result, report = finalize(out, card_json=card_json, manifest=manifest, samples=samples, preds=merged,
                                  variant=first["prompt_variant"], split=sel.get("split"), limit=sel.get("limit"),
                                  shard=None)
    except BaseException:
        lock.release()
        raise
    missing = len(wanted) - len(merged)
    _write_json(out / RUN, {"command": scrub_argv(sys.argv), "fingerprint": fp,
                            "manifest_path": str(manifest.path.resolve()), "manifest_sha256": manifest.sha256,
                            "model": card_json, "selection": {**sel, "shard": None},
                            "prompt_variant": first["prompt_variant"], "merged_from": [str(d) for d, _ in infos],
                            "n_selected": len(samples), "n_missing": missing, "state": "complete",
                            "finished": now_iso(), "predictions_sha256": result.predictions_sha256})
    lock.release()
    result.run_summary = summarize(samples, merged)
    if not quiet:
        if missing:
            print(f"warning: {missing} of {len(samples)} samples have no prediction in these runs "
                  f"(a shard is missing or unfinished); they are scored as missing", file=sys.stderr)
        print(report.render("table"))
        print(f"wrote {out / RESULT}")
    return result
