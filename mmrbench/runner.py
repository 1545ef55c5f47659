"""The evaluation runner: manifest + model card -> predictions.jsonl -> result.json.

Durability is the design centre. Every answer is appended to ``predictions.jsonl`` (flushed and
fsynced) the moment it arrives, so a crash, Ctrl-C or SIGKILL loses at most the answers in flight.
A re-run with the same ``--out`` skips every id already answered with a non-error status and asks
again for the rest: failures are never cached. A re-asked id appends a new line; the file is
rewritten compactly (one line per id, the latest winning, manifest order) when the run completes,
and every reader here also lets the latest line win, so a half-finished run is scored correctly too.

API providers run in a pool of daemon threads (bounded concurrency, requests built inside the
workers so image loading overlaps network waits), or in sender processes (``processes``,
:mod:`mmrbench.senders`) whose answers this process writes; local engines get batches of ``batch_size``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmrbench.cards import ModelCard
from mmrbench.data.manifest import Manifest, file_sha256, read_manifest
from mmrbench.cost import Spend
from mmrbench.data.schema import Sample
from mmrbench.dispatch import dispatch_batches, dispatch_threads, prediction_from_response
from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.predictions import Prediction, PredictionWriter, load_latest, predictions_bytes
from mmrbench.rundir import RunLock, atomic_write_bytes, atomic_write_json, prepare_run_dir
from mmrbench.runinfo import (RUN, RunSummary, check_origin, check_run_dir, dataset_json, fingerprint,
                              protocol_json, run_tag, scrub_argv, summarize)
from mmrbench.selection import parse_shard, select_samples, shard_of

#: names other modules and users import from here (the runner's public face before the split)
__all__ = ["EvalOptions", "run_eval", "dry_run", "finalize", "write_compact", "metrics_rows", "load_latest",
           "prediction_from_response", "parse_shard", "select_samples", "shard_of", "scrub_argv", "fingerprint",
           "run_tag", "summarize", "check_origin", "RunSummary", "dataset_json", "protocol_json",
           "PREDICTIONS", "RESULT", "RUN"]

PREDICTIONS = "predictions.jsonl"
RESULT = "result.json"


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
    #: API providers: send from this many processes (the concurrency split between them); 1 = threads here
    processes: int = 1


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


def finalize(out_dir: Path, *, card_json: dict, manifest: Manifest, samples: Sequence[Sample],
             preds: dict[str, Prediction], variant: str, split: str | None, limit: int | None,
             shard: tuple[int, int] | None, notes: str | None = None, spend: "Spend | None" = None):
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


def run_eval(card: ModelCard, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
             opts: EvalOptions | None = None, *, model: Any = None):
    """Evaluate one model; returns the :class:`~mmrbench.results.Result` (also written to disk)."""
    from mmrbench.prompts import VARIANTS

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
    if opts.processes > 1:
        _check_processes_provider(card, model)  # before a local engine would load its weights
    if model is None:
        model = create_model(card, retry=opts.retry)
    if opts.processes > 1:
        _check_processes(card, model, opts)
    convention = getattr(model, "convention", card.convention) or card.convention
    card_json = card.to_result_json()
    card_json["convention"] = convention
    for k, v in (model.describe() or {}).items():
        card_json.setdefault(k, v)
    fp = fingerprint(card_json, manifest.sha256, opts.variant, opts.shard)
    check_run_dir(out, fp)
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

    from mmrbench.senders import Answerer
    answer = Answerer(model, root, opts.variant, domain, config, decode, convention, tag)

    counts = {"ok": 0, "refused": 0, "truncated": 0, "error": 0}
    spend = Spend(card, root, opts.variant, domain, samples)
    for p in existing.values():
        spend.add(p, this_run=False)  # the mean used to project in-flight costs is this run's own
    if opts.max_cost is not None and todo:
        spend.prime(todo[0].id)
    from mmrbench.cost import BudgetGuard
    over_budget = BudgetGuard(spend, opts.max_cost)

    bar = _progress(len(todo), card.name, opts.progress and not opts.quiet)
    limiter = None
    writer = PredictionWriter(pred_path, fsync_interval_s=0.5)
    interrupted = False
    try:
        def record(pred: Prediction) -> None:
            writer.write(pred)
            spend.replace(existing.get(pred.id), pred)  # the latest line per sample counts, as a resume counts it
            existing[pred.id] = pred
            counts[pred.status] = counts.get(pred.status, 0) + 1
            bar.update(1)
            if counts["error"]:
                bar.set_postfix(errors=counts["error"], refresh=False)

        batch = max(1, int(getattr(model, "batch_size", 1) or 1))
        if over_budget.hit:
            pass  # the folder already spent the budget: ask nothing
        elif batch == 1:
            k = max(1, int(opts.concurrency or card.concurrency or getattr(model, "max_concurrency", 1) or 1))
            adaptive = opts.adaptive and hasattr(model, "concurrency_limiter") and k > 1
            if opts.processes > 1 and todo:
                from mmrbench.senders import SenderPool, SenderSpec
                spec = SenderSpec(card, opts.retry, root, opts.variant, domain, config, decode, convention, tag)
                with SenderPool(spec, k, opts.processes, opts.min_concurrency if adaptive else None) as senders:
                    limiter = senders.limiter  # one limiter in shared memory for every sender's attempts
                    t0 = time.perf_counter()  # from the first request, as a local engine's after its load
                    senders.dispatch(todo, record, stop=over_budget)
                    run_info["senders"] = senders.finish()
            elif todo:
                if adaptive:
                    from mmrbench.adapters.retry import AdaptiveConcurrency
                    limiter = AdaptiveConcurrency(k, min(k, max(1, opts.min_concurrency)))
                    model.concurrency_limiter = limiter
                dispatch_threads(todo, answer, record, k, convention, tag, stop=over_budget)
        else:
            dispatch_batches(todo, model, record, batch, convention, lambda s: build_request(
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
                                "budget_reached": over_budget.hit}
        _write_json(out / RUN, run_info)
        try:
            model.close()
        except Exception:  # pragma: no cover
            pass

    result, report = finalize(out, card_json=card_json, manifest=manifest, samples=samples, preds=existing,
                              variant=opts.variant, split=opts.split, limit=opts.limit, shard=opts.shard, spend=spend)
    summary = summarize(samples, existing)
    if over_budget.hit and not summary.complete:
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


def _check_processes_provider(card: ModelCard, model: Any) -> None:
    """``--processes`` splits an API provider's concurrent requests between processes that each build
    the model from its card; say so rather than ignore it where it cannot apply."""
    from mmrbench.adapters.registry import provider_class
    from mmrbench.adapters.retry import RetryingAPIModel
    if model is not None:
        raise ConfigError("--processes needs a model built from its card (each sender process builds its own)")
    try:
        api = issubclass(provider_class(card.provider), RetryingAPIModel)
    except ImportError:  # a missing extra: create_model says which one
        return
    if not api:
        raise ConfigError(f"--processes applies to API providers (requests sent over HTTP); '{card.provider}' runs "
                          f"on this machine: use --batch-size for local engines")


def _check_processes(card: ModelCard, model: Any, opts: EvalOptions) -> None:
    """The built model's side of :func:`_check_processes_provider`: one request at a time, and no more
    processes than concurrent requests."""
    if int(getattr(model, "batch_size", 1) or 1) > 1:
        raise ConfigError(f"--processes applies to API providers sending one request at a time; '{card.provider}' "
                          f"batches: use --batch-size")
    k = max(1, int(opts.concurrency or card.concurrency or getattr(model, "max_concurrency", 1) or 1))
    if opts.processes > k:
        raise ConfigError(f"--processes {opts.processes} needs at least as many concurrent requests; the "
                          f"concurrency is {k} (raise --concurrency)")


def dry_run(card: ModelCard, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
            opts: EvalOptions | None = None) -> str:
    """Estimate what ``run_eval`` would ask and cost, without loading the model, sending a request or
    writing a file. Samples already answered in ``out_dir`` (this same run's lines) are left out,
    as a resume would skip them. Returns the report as text."""
    from mmrbench.cost import card_prices, estimate, estimate_report, image_rule
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
    return estimate_report(f"{card.title} on {manifest.path.name}", len(samples), len(todo), "samples",
                           est.input_tokens, est.image_tokens, image_rule(card),
                           int(card.generation_config().max_new_tokens), card_prices(card), opts.max_cost)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True,
                smoothing=0.1, file=sys.stderr)


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
