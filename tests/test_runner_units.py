"""Small pure pieces of the runner: the predictions file, argv scrubbing, option parsing, selection."""
from __future__ import annotations

import argparse
import json

import pytest

from runner_data import make_tiny_manifest

from mmrbench.commands.eval import parse_options, variant_of
from mmrbench.data.manifest import read_manifest
from mmrbench.errors import ConfigError
from mmrbench.predictions import Prediction
from mmrbench.runner import load_latest, scrub_argv, select_samples, write_compact


def test_latest_line_wins_and_torn_tail_is_ignored(tmp_path):
    p = tmp_path / "predictions.jsonl"
    lines = [{"id": "a", "response": None, "status": "error", "error": "HTTP 500"},
             {"id": "b", "response": "No."},
             {"id": "a", "response": "Yes.", "status": "ok"}]
    p.write_text("".join(json.dumps(d) + "\n" for d in lines) + '{"id": "c", "resp')
    latest = load_latest(p)
    assert list(latest) == ["b", "a"] and latest["a"].status == "ok" and latest["a"].response == "Yes."
    rows = write_compact(p, latest, ["a", "b", "z"])
    assert [r.id for r in rows] == ["a", "b"]
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == ["a", "b"]
    assert load_latest(tmp_path / "missing.jsonl") == {}


def test_bad_middle_line_is_an_error(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text('{"id": "a", "response": "No."}\nnot json\n{"id": "b", "response": "No."}\n')
    with pytest.raises(Exception, match=":2: not valid JSON"):
        load_latest(p)


def test_scrub_argv():
    argv = ["mmrbench", "eval", "--model", "gpt-4o", "--api-key", "sk-1", "--token=abc", "--option", "api_key=sk-2",
            "--base-url", "https://user:pw@host/v1", "--option", "lora=/x"]
    out = scrub_argv(argv)
    blob = " ".join(out)
    assert "sk-1" not in blob and "abc" not in blob and "sk-2" not in blob and "pw" not in blob
    assert "lora=/x" in out and "gpt-4o" in out and "https://***@host/v1" in out


def test_options_and_variants():
    assert parse_options(["a=1", "b=0.5", "c=true", "d=/p/q", "e=x=y"]) == {"a": 1, "b": 0.5, "c": True, "d": "/p/q",
                                                                          "e": "x=y"}
    with pytest.raises(ConfigError):
        parse_options(["novalue"])
    ns = lambda **kw: argparse.Namespace(**{"no_reference": False, "domain_knowledge": False,  # noqa: E731
                                            "prompt_variant": None, **kw})
    assert variant_of(ns()) == "default"
    assert variant_of(ns(no_reference=True)) == "no_reference"
    assert variant_of(ns(prompt_variant="domain_knowledge", domain_knowledge=True)) == "domain_knowledge"
    with pytest.raises(ConfigError, match="conflicting"):
        variant_of(ns(no_reference=True, domain_knowledge=True))


def test_selection(tmp_path):
    m = read_manifest(make_tiny_manifest(tmp_path))
    assert len(select_samples(m)) == 16
    assert {s.subdataset for s in select_samples(m, subdatasets=["SubB"])} == {"SubB"}
    assert [s.id for s in select_samples(m, limit=3)] == [s.id for s in m.select(split="test")[:3]]
    assert all(s.split == "train" for s in select_samples(m, split="train"))
    with pytest.raises(ConfigError, match="unknown subdataset"):
        select_samples(m, subdatasets=["Nope"])
    with pytest.raises(ConfigError):
        select_samples(m, limit=0)


def test_retry_flags_reach_the_policy(tmp_path, monkeypatch):
    import mmrbench.runner as runner
    from mmrbench.cli import main
    seen = {}
    monkeypatch.setattr(runner, "run_eval", lambda card, data, out, opts: seen.update(opts=opts, card=card))
    assert main(["eval", "--model", "openai:m", "--data", "x", "--out", str(tmp_path), "--retries", "3",
                 "--retry-wait", "0.25", "--temperature", "0.7", "--option", "k=v", "--shard", "1/3"]) == 0
    opts, card = seen["opts"], seen["card"]
    assert opts.retry.max_attempts == 3 and opts.retry.initial_s == 0.25 and opts.shard == (1, 3)
    assert card.generation_config().temperature == 0.7 and card.options == {"k": "v"}


def test_metrics_rows_match_the_report(tmp_path):
    from mmrbench.runner import metrics_rows
    from mmrbench.scoring import score_predictions
    m = read_manifest(make_tiny_manifest(tmp_path))
    tests = m.select(split="test")
    preds = [Prediction(s.id, "<answer>Yes.</answer>" if i % 2 else "<answer>No.</answer>") for i, s in enumerate(tests)]
    report = score_predictions(tests, preds)
    assert metrics_rows(json.loads(json.dumps(report.to_json()))) == report.rows()
