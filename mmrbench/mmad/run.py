"""A minimal driver for ``mmad-v1`` on the existing adapters, until the runner takes MMAD as a task.

``evaluate_mmad`` asks every selected query through any provider (a spec string such as
``openai:gpt-4o``, a :class:`~mmrbench.cards.ModelCard`, or a ready :class:`ModelAPI`), appends one line
per query to ``OUT/predictions.jsonl`` as answers arrive (a re-run skips queries already answered with a
status other than ``error``, so a killed run resumes and errors are retried), then scores and writes
``OUT/result.json`` with protocol ``mmad-v1``. Settings that change the requests are recorded in
``OUT/run.json`` and must match when resuming into the same folder.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from mmrbench.errors import ConfigError, MMRBenchError
from mmrbench.mmad.data import MMADData, load_mmad
from mmrbench.mmad.prompts import load_domain_knowledge
from mmrbench.mmad.scoring import MMADReport
from mmrbench.mmad.task import MMADQuery, MMADTask
from mmrbench.predictions import Prediction, PredictionWriter

PREDICTIONS, RESULT, RUN = "predictions.jsonl", "result.json", "run.json"


def _load_latest(path: Path) -> dict[str, Prediction]:
    from mmrbench.runner import load_latest  # read-only use of the runner's resume reader
    return load_latest(path)


def _model(model: Any, *, base_url: str | None, retry: Any):
    from mmrbench.cards import ModelCard, create_model, parse_spec, with_overrides
    if isinstance(model, str):
        model = parse_spec(model)
    if isinstance(model, ModelCard):
        card = with_overrides(model, base_url=base_url) if base_url else model
        if card.provider == "detector":
            raise ConfigError(f"'{card.name}' is a detector: MMAD asks multiple-choice questions, it needs a language model")
        return create_model(card, retry=retry), card.to_result_json(), card.generation_config()
    describe = getattr(model, "describe", lambda: {})() or {}
    return model, describe, None


def _answer(model: Any, task: MMADTask, q: MMADQuery, config: Any, convention: str) -> Prediction:
    from mmrbench.runner import prediction_from_response
    try:
        req = task.build_request(q, config)
    except MMRBenchError as exc:
        return Prediction(q.id, None, "error", str(exc), convention=convention)
    try:
        resps = model.generate([req])
    except Exception as exc:  # a provider must not raise; if one does, the query is an error line, not a crash
        return Prediction(q.id, None, "error", f"{type(exc).__name__}: {exc}", convention=convention)
    if not resps:
        return Prediction(q.id, None, "error", "provider returned no response", convention=convention)
    return prediction_from_response(q.id, resps[0], convention, getattr(resps[0], "attempts", None))


def evaluate_mmad(model: Any, data: MMADData | str | os.PathLike, out: str | os.PathLike, *,
                  shots: int = 1, templates: str = "random", ask: str = "ad-first", mode: str = "strict",
                  domain_knowledge: str | os.PathLike | None = None, images_root: str | os.PathLike | None = None,
                  datasets: Sequence[str] | None = None, categories: Sequence[str] | None = None,
                  limit: int | None = None, shard: tuple[int, int] | None = None, concurrency: int | None = None,
                  base_url: str | None = None, retry: Any = None, quiet: bool = True) -> MMADReport:
    """Evaluate one model on MMAD (or a file in its format); returns the report (also in result.json)."""
    from mmrbench.provenance import harness_info, now_iso

    if not isinstance(data, MMADData):
        data = load_mmad(data, images_root=images_root)
    knowledge = load_domain_knowledge(domain_knowledge) if domain_knowledge else None
    task = MMADTask(data, shots=shots, templates=templates, ask=ask, knowledge=knowledge, mode=mode)
    queries = task.select(datasets=datasets, categories=categories, limit=limit, shard=shard)
    if not queries:
        raise MMRBenchError(f"no MMAD questions selected from {data.json_path}")
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    api, card_json, config = _model(model, base_url=base_url, retry=retry)
    convention = getattr(api, "convention", None) or card_json.get("convention") or "pixel"
    fp = {"mmad_sha256": data.sha256, "protocol": {k: v for k, v in task.protocol_json().items() if k != "scoring_mode"},
          "provider": card_json.get("provider"), "model_id": card_json.get("model_id"),
          "sampling": card_json.get("sampling"), "shard": f"{shard[0]}/{shard[1]}" if shard else None}
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
    existing = _load_latest(pred_path)
    todo = [q for q in queries if q.id not in existing or existing[q.id].status == "error"]
    run_path.write_text(json.dumps({"fingerprint": fp, "started": now_iso(), "n_queries": len(queries),
                                    "n_todo": len(todo)}, indent=2) + "\n", encoding="utf-8")
    k = max(1, int(concurrency or getattr(api, "max_concurrency", 1) or 1))
    try:
        with PredictionWriter(pred_path, fsync_interval_s=0.5) as writer:
            if k == 1:
                for q in todo:
                    pred = _answer(api, task, q, config, convention)
                    writer.write(pred)
                    existing[pred.id] = pred
            else:
                with ThreadPoolExecutor(max_workers=k) as pool:
                    for pred in pool.map(lambda q: _answer(api, task, q, config, convention), todo):
                        writer.write(pred)
                        existing[pred.id] = pred
    finally:
        try:
            api.close()
        except Exception:  # pragma: no cover
            pass

    report = task.score(queries, existing)
    from mmrbench.data.manifest import file_sha256
    result = {
        "schema_version": 1, "protocol": task.protocol_json(), "model": card_json,
        "dataset": {"name": "MMAD", "mmad_json": data.json_path.name, "sha256": data.sha256,
                    "datasets": sorted({q.image.dataset for q in queries}),
                    "n_images": len({q.image.key for q in queries}), "n_questions": sum(len(q.questions) for q in queries),
                    **({"limit": limit} if limit is not None else {}),
                    **({"shard": f"{shard[0]}/{shard[1]}"} if shard else {})},
        "metrics": report.to_json(), "predictions_sha256": file_sha256(pred_path), "harness": harness_info(),
        "date": now_iso(), "provenance": "run",
    }
    (o / RESULT).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not quiet:
        print(report.render())
        print(f"wrote {o / RESULT}")
    return report
