"""The ``mmad-v1`` driver on the existing adapters (``mmrbench mmad eval``).

``evaluate_mmad`` asks every selected query through any provider (a spec string such as
``openai:gpt-4o``, a :class:`~mmrbench.cards.ModelCard`, or a ready :class:`ModelAPI`), appends one line
per query to ``OUT/predictions.jsonl`` as answers arrive (a re-run skips queries already answered with a
status other than ``error``, so a killed run resumes and errors are retried), then scores and writes
``OUT/result.json`` with protocol ``mmad-v1``. Settings that change the requests are recorded in
``OUT/run.json`` and must match when resuming into the same folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.mmad.data import MMADData, load_mmad
from mmrbench.mmad.prompts import load_domain_knowledge
from mmrbench.mmad.scoring import MMADReport
from mmrbench.mmad.task import MMADQuery, MMADTask
from mmrbench.dispatch import dispatch_threads
from mmrbench.predictions import Prediction, PredictionWriter, load_latest
from mmrbench.rundir import RunLock, atomic_write_json, prepare_run_dir
from mmrbench.weights_identity import reported

PREDICTIONS, RESULT, RUN = "predictions.jsonl", "result.json", "run.json"


def _model(model: Any, *, base_url: str | None, retry: Any):
    from mmrbench.cards import create_model
    card = _card(model, base_url)
    if card is not None:
        if card.provider == "detector":
            raise ConfigError(f"'{card.name}' is a detector: MMAD asks multiple-choice questions, it needs a language model")
        api = create_model(card, retry=retry)
        # a local folder's content digest joins the card, as in mmrbench eval (resume never mixes weights)
        card_json = {**card.to_result_json(), **reported(getattr(api, "describe", lambda: {})() or {})}
        return api, card_json, card.generation_config(), card
    describe: dict[str, Any] = getattr(model, "describe", lambda: {})() or {}
    return model, describe, None, None


def _card(model: Any, base_url: str | None):
    """The model card behind a spec or card (None for a ready ModelAPI): what prices a run."""
    from mmrbench.cards import ModelCard, parse_spec, with_overrides
    card = parse_spec(model) if isinstance(model, str) else model
    if not isinstance(card, ModelCard):
        return None
    return with_overrides(card, base_url=base_url) if base_url else card


def _answer(model: Any, task: MMADTask, q: MMADQuery, config: Any, convention: str) -> Prediction:
    from mmrbench.dispatch import prediction_from_response
    try:
        # remote providers send files as they are; local engines need pixels
        req = task.build_request(q, config, decode=not getattr(model, "accepts_file_bytes", False))
    except MMRBenchError as exc:
        return Prediction(q.id, None, "error", str(exc), convention=convention)
    try:
        resps = model.generate([req])
    except Exception as exc:  # a provider must not raise; if one does, the query is an error line, not a crash
        return Prediction(q.id, None, "error", f"{type(exc).__name__}: {exc}", convention=convention)
    if not resps:
        return Prediction(q.id, None, "error", "provider returned no response", convention=convention)
    return prediction_from_response(q.id, resps[0], convention)


def _task_and_queries(data: MMADData | str | os.PathLike, *, shots: int, templates: str, ask: str, mode: str,
                      domain_knowledge: str | os.PathLike | None, images_root: str | os.PathLike | None,
                      datasets: Sequence[str] | None, categories: Sequence[str] | None, limit: int | None,
                      shard: tuple[int, int] | None) -> tuple[MMADData, MMADTask, list[MMADQuery]]:
    if not isinstance(data, MMADData):
        data = load_mmad(data, images_root=images_root)
    knowledge = load_domain_knowledge(domain_knowledge) if domain_knowledge else None
    task = MMADTask(data, shots=shots, templates=templates, ask=ask, knowledge=knowledge, mode=mode)
    queries = task.select(datasets=datasets, categories=categories, limit=limit, shard=shard)
    if not queries:
        raise MMRBenchError(f"no MMAD questions selected from {data.json_path}")
    return data, task, queries


def evaluate_mmad(model: Any, data: MMADData | str | os.PathLike, out: str | os.PathLike, *,
                  shots: int = 1, templates: str = "random", ask: str = "ad-first", mode: str = "strict",
                  domain_knowledge: str | os.PathLike | None = None, images_root: str | os.PathLike | None = None,
                  datasets: Sequence[str] | None = None, categories: Sequence[str] | None = None,
                  limit: int | None = None, shard: tuple[int, int] | None = None, concurrency: int | None = None,
                  base_url: str | None = None, retry: Any = None, quiet: bool = True,
                  max_cost: float | None = None) -> MMADReport:
    """Evaluate one model on MMAD (or a file in its format); returns the report (also in result.json).

    ``max_cost`` (US dollars, needs the card's prices) stops sending once the estimated spend reaches
    it, resumably, as ``mmrbench eval --max-cost`` does (the run is then incomplete: exit 3)."""
    from mmrbench.cost import card_prices
    data, task, queries = _task_and_queries(data, shots=shots, templates=templates, ask=ask, mode=mode,
                                            domain_knowledge=domain_knowledge, images_root=images_root,
                                            datasets=datasets, categories=categories, limit=limit, shard=shard)
    if max_cost is not None:
        card = _card(model, base_url)
        if card is None or card_prices(card) is None:
            name = f"model card '{card.name}'" if card is not None else "a ready model (no card)"
            raise ConfigError(f"--max-cost needs the model's prices: {name} has no "
                              f"price_input_per_mtok / price_output_per_mtok (US dollars per million tokens)")
    o = prepare_run_dir(out)
    with RunLock(o):
        return _evaluate_locked(model, data, task, queries, o, base_url=base_url, retry=retry,
                                concurrency=concurrency, limit=limit, shard=shard, quiet=quiet, max_cost=max_cost)


def estimate_mmad(model: Any, data: MMADData | str | os.PathLike, out: str | os.PathLike, *,
                  shots: int = 1, templates: str = "random", ask: str = "ad-first", mode: str = "strict",
                  domain_knowledge: str | os.PathLike | None = None, images_root: str | os.PathLike | None = None,
                  datasets: Sequence[str] | None = None, categories: Sequence[str] | None = None,
                  limit: int | None = None, shard: tuple[int, int] | None = None, base_url: str | None = None,
                  max_cost: float | None = None) -> str:
    """``--dry-run``: what :func:`evaluate_mmad` with the same arguments would ask and cost, as text;
    no model is loaded, nothing is sent or written."""
    from mmrbench.mmad.cost import dry_run_mmad
    _, task, queries = _task_and_queries(data, shots=shots, templates=templates, ask=ask, mode=mode,
                                         domain_knowledge=domain_knowledge, images_root=images_root,
                                         datasets=datasets, categories=categories, limit=limit, shard=shard)
    card = _card(model, base_url)
    if card is None:
        raise ConfigError("--dry-run needs a model card or spec (prices, max_new_tokens), not a ready model")
    return dry_run_mmad(card, task, queries, out, max_cost)


def _evaluate_locked(model: Any, data: MMADData, task: MMADTask, queries: Sequence[MMADQuery], o: Path, *,
                     base_url: str | None, retry: Any, concurrency: int | None, limit: int | None,
                     shard: tuple[int, int] | None, quiet: bool, max_cost: float | None = None) -> MMADReport:
    """The run itself, under the run folder's lock (the same guarantees as ``mmrbench eval``: one
    writer, no writes through links, lines tagged with their run, atomic result files)."""
    from mmrbench.provenance import now_iso
    from mmrbench.runinfo import check_origin, run_tag, summarize

    api, card_json, config, card = _model(model, base_url=base_url, retry=retry)
    convention = getattr(api, "convention", None) or card_json.get("convention") or "pixel"
    fp = {"mmad_sha256": data.sha256, "protocol": {k: v for k, v in task.protocol_json().items() if k != "scoring_mode"},
          "provider": card_json.get("provider"), "model_id": card_json.get("model_id"),
          "sampling": card_json.get("sampling"), "shard": f"{shard[0]}/{shard[1]}" if shard else None,
          **reported(card_json)}
    run_path = o / RUN
    if run_path.exists():
        try:
            before = json.loads(run_path.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            before = None
        if before is not None and before != fp:
            diff = sorted(k for k in fp if fp.get(k) != before.get(k))
            raise ConfigError(f"{run_path}: field 'fingerprint': {', '.join(diff)} differ from the run already in "
                              f"this folder; use another --out to start a new run")
    pred_path = o / PREDICTIONS
    tag = run_tag(fp)
    existing = load_latest(pred_path)
    check_origin(pred_path, existing, tag)
    todo = [q for q in queries if q.id not in existing or existing[q.id].status == "error"]
    run_info = {"fingerprint": fp, "run_tag": tag, "model": card_json, "started": now_iso(),
                "n_queries": len(queries), "n_todo": len(todo), "state": "running"}
    atomic_write_json(run_path, run_info)
    from mmrbench.cost import BudgetGuard, Spend
    guard = None
    if card is not None:
        from mmrbench.mmad.cost import prompt_tokens
        by_id = {q.id: q for q in queries}
        sizes: dict = {}
        spend = Spend(card, estimate_prompt=lambda qid: prompt_tokens(card, task, by_id[qid], sizes)[0]
                      if qid in by_id else None)
        for p in existing.values():
            spend.add(p, this_run=False)
        if todo:
            spend.prime(todo[0].id)
        guard = BudgetGuard(spend, max_cost)
    k = max(1, int(concurrency or getattr(api, "max_concurrency", 1) or 1))
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc=str(card_json.get("name") or card_json.get("model_id") or "mmad"),
               unit="request", disable=quiet, dynamic_ncols=True, file=sys.stderr)
    try:
        with PredictionWriter(pred_path, fsync_interval_s=0.5) as writer:
            def record(pred: Prediction) -> None:
                pred.run = tag
                writer.write(pred)
                if guard is not None:
                    guard.spend.replace(existing.get(pred.id), pred)
                existing[pred.id] = pred
                bar.update(1)

            # the runner's dispatch: bounded daemon threads, a provider bug becomes an error line
            if not (guard is not None and guard.hit):
                dispatch_threads(todo, lambda q: _answer(api, task, q, config, convention), record, k, convention, tag,
                                 stop=guard or (lambda in_flight: False))
    finally:
        bar.close()
        try:
            api.close()
        except Exception:  # pragma: no cover
            pass

    from mmrbench.runner import write_compact  # one line per id, in question order (as the MMR-AD runner leaves it)
    write_compact(pred_path, existing, [q.id for q in queries])
    report = task.score(queries, existing)
    _write_result(o, task, data, queries, existing, card_json, report, limit=limit, shard=shard)
    summary = summarize(queries, existing)
    cost_info = {}
    if guard is not None and guard.spend.prices is not None:
        cost_info = {"cost": {"spent_usd": round(guard.spend.usd, 6), "max_cost_usd": max_cost,
                              "budget_reached": guard.hit}}
        if guard.hit and not summary.complete:
            summary.budget = (float(max_cost), guard.spend.usd)  # type: ignore[arg-type]
    atomic_write_json(run_path, {**run_info, "state": "complete" if summary.complete else "incomplete",
                                 "finished": now_iso(), "n_unanswered": summary.n_unanswered, **cost_info})
    report.run_summary = summary  # not serialised: the CLI's exit code
    if not quiet:
        print(report.render())
        print(f"wrote {o / RESULT}")
    return report


def usage_totals(preds: Sequence[Prediction]) -> dict[str, int]:
    """Token usage summed over the answers (the cost of a run, priced by whoever reads it)."""
    tot = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    for p in preds:
        tot["requests"] += 1
        for k in ("prompt_tokens", "completion_tokens"):
            v = (p.usage or {}).get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                tot[k] += v
    return tot


def _cost(card_json: dict, usage: dict[str, int]) -> dict:
    """``{"cost": ...}`` from the answers' token usage and the card's published prices (none when the
    card has no prices): the same estimate ``mmrbench eval`` records."""
    from mmrbench.cost import Prices
    pi, po = card_json.get("price_input_per_mtok"), card_json.get("price_output_per_mtok")
    if pi is None or po is None:
        return {}
    prices = Prices(float(pi), float(po))
    usd = prices.cost(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
    return {"cost": {"usd": round(usd, 6), **prices.to_json(), "estimated": True,
                     "rule": "token usage reported by the provider x the card's published prices"}}


def _write_result(o: Path, task: MMADTask, data: MMADData, queries: Sequence[MMADQuery],
                  preds: dict[str, Prediction], card_json: dict, report: MMADReport, *,
                  limit: int | None, shard: tuple[int, int] | None, shards: list[str] | None = None) -> None:
    from mmrbench.data.manifest import file_sha256
    from mmrbench.provenance import harness_info, now_iso
    pred_path = o / PREDICTIONS
    wanted = {q.id for q in queries}
    result = {
        "schema_version": 1, "protocol": task.protocol_json(), "model": card_json,
        "dataset": {"name": "MMAD", "mmad_json": data.json_path.name, "sha256": data.sha256,
                    "datasets": sorted({q.image.dataset for q in queries}),
                    "n_images": len({q.image.key for q in queries}), "n_questions": sum(len(q.questions) for q in queries),
                    **({"limit": limit} if limit is not None else {}),
                    **({"shard": f"{shard[0]}/{shard[1]}"} if shard else {}),
                    **({"merged_shards": shards} if shards else {})},
        "metrics": report.to_json(), "usage": usage_totals([p for i, p in preds.items() if i in wanted]),
        **_cost(card_json, usage_totals([p for i, p in preds.items() if i in wanted])),
        "predictions_sha256": file_sha256(pred_path), "harness": harness_info(), "date": now_iso(), "provenance": "run",
    }
    atomic_write_json(o / RESULT, result)


def merge_mmad_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                    data: MMADData | str | os.PathLike, *, images_root: str | os.PathLike | None = None,
                    domain_knowledge: str | os.PathLike | None = None, mode: str = "strict") -> MMADReport:
    """Join shard runs (``--shard i/n``) of one model into one scored run. The shards must share the
    release, the request settings and the model; together they must cover every shard 0..n-1 once."""
    from mmrbench.predictions import write_predictions
    if not isinstance(data, MMADData):
        data = load_mmad(data, images_root=images_root)
    fps, cards = [], []
    for d in run_dirs:
        rp = Path(d) / RUN
        try:
            info = json.loads(rp.read_text(encoding="utf-8"))
            fps.append(info["fingerprint"])
            cards.append(info.get("model") or {})
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise MMRBenchError(f"{rp}: field 'fingerprint': missing or unreadable (not an MMAD run folder?)") from None
    base = {k: v for k, v in fps[0].items() if k != "shard"}
    for d, fp in zip(run_dirs, fps):
        diff = sorted(k for k in set(base) | set(fp) if k != "shard" and fp.get(k) != base.get(k))
        if diff:
            raise ConfigError(f"{Path(d) / RUN}: field 'fingerprint': {', '.join(diff)} differ from {Path(run_dirs[0]) / RUN}")
    if base["mmad_sha256"] != data.sha256:
        raise ConfigError(f"{data.json_path}: the runs were made on another mmad.json (sha256 differs)")
    shards = [fp.get("shard") for fp in fps]
    if None in shards:
        raise ConfigError("merge takes shard runs (--shard I/N) only")
    ns = {s.split("/")[1] for s in shards}
    if len(ns) != 1 or sorted(int(s.split("/")[0]) for s in shards) != list(range(int(ns.pop()))):
        raise ConfigError(f"shards {', '.join(shards)} do not cover 0..N-1 of one N exactly once")
    proto = base["protocol"]
    knowledge = load_domain_knowledge(domain_knowledge) if domain_knowledge else None
    if proto.get("domain_knowledge") and knowledge is None:
        raise ConfigError("the runs used domain knowledge: pass the same domain_knowledge.json")
    task = MMADTask(data, shots=proto["shots"], templates=proto["templates"], ask=proto["ask"],
                    knowledge=knowledge, mode=mode)
    queries = task.select()
    preds: dict[str, Prediction] = {}
    for d in run_dirs:
        preds.update(load_latest(Path(d) / PREDICTIONS))
    from mmrbench.runinfo import run_tag, summarize
    o = prepare_run_dir(out)
    order = {q.id: i for i, q in enumerate(queries)}
    merged_fp = {**base, "shard": None}
    tag = run_tag(merged_fp)
    preds = {sid: dataclasses.replace(p, run=tag) for sid, p in preds.items() if sid in order}
    report = task.score(queries, preds)
    card_json = cards[0] or {k: base.get(k) for k in ("provider", "model_id", "sampling")}
    with RunLock(o):
        write_predictions(o / PREDICTIONS, sorted(preds.values(), key=lambda p: order[p.id]))
        _write_result(o, task, data, queries, preds, card_json, report, limit=None, shard=None, shards=sorted(shards))
        atomic_write_json(o / RUN, {"fingerprint": merged_fp, "run_tag": tag,
                                    "merged_from": [str(d) for d in run_dirs], "state": "complete"})  # last
    report.run_summary = summarize(queries, preds)
    return report
