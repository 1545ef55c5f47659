"""The runner end to end against a loopback OpenAI-compatible server (real SDK, real HTTP)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer, Reply
from runner_data import answer_for, bytes_index, digest_index, make_tiny_manifest, pixel_digest

from mmrbench.adapters.retry import FAST
from mmrbench.cards import parse_spec, with_overrides
from mmrbench.cli import main
from mmrbench.vision.images import load_rgb
from mmrbench.data.manifest import read_manifest
from mmrbench.errors import ConfigError
from mmrbench.predictions import Prediction, read_predictions
from mmrbench.prompts import SYSTEM_PROMPT
from mmrbench.results import read_result
from mmrbench.runner import EvalOptions, run_eval
from mmrbench.scoring import score_predictions


@pytest.fixture()
def manifest(tmp_path) -> Path:
    return make_tiny_manifest(tmp_path / "data")


def responder_for(manifest_path: Path, *, permanent: dict | None = None, by_bytes: bool = False):
    index = bytes_index(manifest_path) if by_bytes else digest_index(manifest_path)
    permanent = permanent or {}

    def key(req):
        if by_bytes:
            return hashlib.sha256(req.images[-1][1]).hexdigest()
        return pixel_digest(req.pil_images()[-1])

    def respond(req):
        sample = index.get(key(req)) if req.images else None
        if sample is None:
            return Reply(status=400, body=b'{"error": {"message": "unknown image"}}')
        if sample.id in permanent:
            return permanent[sample.id]
        return Reply(answer_for(sample))
    return respond


def expected_metrics(manifest_path: Path) -> dict:
    m = read_manifest(manifest_path)
    samples = m.select(split="test")
    preds = [Prediction(s.id, answer_for(s), convention="pixel", image_sizes=[[s.width, s.height]] * 2) for s in samples]
    return score_predictions(samples, preds).to_json()


def test_eval_cli_against_loopback_server(manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run"
    with FakeOpenAIServer(responder_for(manifest)) as srv:
        base_url = srv.base_url
        rc = main(["eval", "--model", "openai:gpt-4o", "--base-url", srv.base_url, "--data", str(manifest),
                   "--out", str(out), "--concurrency", "4", "--no-progress"])
        requests = list(srv.requests)
    assert rc == 0
    m = read_manifest(manifest)
    tests = m.select(split="test")
    assert len(requests) == len(tests)
    by_query = {pixel_digest(load_rgb(m.resolve(s.image))): s for s in tests}
    for req in requests:
        assert req.path == "/v1/chat/completions"
        assert req.body["model"] == "gpt-4o"
        assert req.body["max_tokens"] == 512 and req.body["temperature"] == 0.0
        assert [msg["role"] for msg in req.messages] == ["system", "user"]
        assert req.system == SYSTEM_PROMPT
        kinds = [p["type"] for p in req.messages[1]["content"]]
        assert kinds == ["image_url", "image_url", "text"]
        assert all(mime == "image/png" for mime, _ in req.images)
        s = by_query[req.image_digests[1]]
        # reference first, query second, both at their original size
        assert req.image_digests[0] == pixel_digest(load_rgb(m.resolve(s.reference)))
        assert req.image_sizes == [(s.width, s.height), (s.width, s.height)]
        assert "first image shows a normal" in req.user_text
    preds = read_predictions(out / "predictions.jsonl")
    assert sorted(p.id for p in preds) == sorted(s.id for s in tests)
    assert all(p.status == "ok" and p.convention == "pixel" and p.image_sizes == [[48, 40], [48, 40]] for p in preds)
    res = read_result(out)
    assert res.metrics == expected_metrics(manifest)
    assert res.model["provider"] == "openai" and res.model["model_id"] == "gpt-4o"
    assert res.model["base_url"] == base_url
    assert res.dataset["manifest_sha256"] == m.sha256
    assert res.protocol["prompt_variant"] == "default" and len(res.protocol["prompt_sha256"]) == 64
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "complete" and run["status_counts"]["ok"] == len(tests)
    printed = capsys.readouterr().out
    assert "SubA" in printed and "SubB" in printed  # the Table-4 rows


def test_transient_failures_retried_permanent_recorded(manifest, tmp_path):
    m = read_manifest(manifest)
    tests = m.select(split="test")
    bad_request, malformed = tests[1].id, tests[2].id
    permanent = {bad_request: Reply(status=400), malformed: Reply(body=b"<html>gateway</html>")}
    card = with_overrides(parse_spec("openai:gpt-4o"), concurrency=1, timeout_s=0.4)
    out = tmp_path / "run"
    with FakeOpenAIServer(responder_for(manifest, permanent=permanent)) as srv:
        card = with_overrides(card, base_url=srv.base_url)
        srv.enqueue(Reply(status=429, headers={"Retry-After": "0.2"}), Reply(status=500), Reply(status=503),
                    Reply("late", delay_s=1.0))
        t0 = time.perf_counter()
        policy = dataclasses.replace(FAST, max_attempts=6)  # one sample meets all four failures in a row
        res = run_eval(card, manifest, out, EvalOptions(retry=policy, progress=False, quiet=True))
        elapsed = time.perf_counter() - t0
        n_first = len(srv.requests)
    # 4 scripted transient failures each cost one extra request; permanent failures are not retried
    assert n_first == len(tests) + 4
    assert elapsed >= 0.2  # Retry-After honoured although FAST backs off for at most 0.05 s
    preds = {p.id: p for p in read_predictions(out / "predictions.jsonl")}
    assert set(preds) == {s.id for s in tests}
    assert preds[bad_request].status == "error" and "400" in preds[bad_request].error
    assert preds[malformed].status == "error" and "malformed" in preds[malformed].error
    assert sum(p.status == "ok" for p in preds.values()) == len(tests) - 2
    assert any(p.extra.get("attempts", 1) > 1 for p in preds.values())
    invalid = sum(v["invalid"] for v in res.metrics["subdatasets"].values())
    assert invalid == 2

    # the next run asks again for the two failed samples only, and the answers replace the error lines
    with FakeOpenAIServer(responder_for(manifest)) as srv2:
        card2 = with_overrides(card, base_url=srv2.base_url)
        res2 = run_eval(card2, manifest, out, EvalOptions(retry=FAST, progress=False, quiet=True))
        index = digest_index(manifest)
        asked = sorted(index[r.image_digests[-1]].id for r in srv2.requests)
    assert asked == sorted([bad_request, malformed])
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(tests)  # compacted: one line per id
    assert all(json.loads(line)["status"] == "ok" for line in lines)
    assert res2.metrics == expected_metrics(manifest)


def test_sigkill_halfway_then_resume(manifest, tmp_path):
    m = read_manifest(manifest)
    tests = m.select(split="test")
    index = digest_index(manifest)
    killed, full = tmp_path / "killed", tmp_path / "full"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    with FakeOpenAIServer(responder_for(manifest), latency_s=0.15) as srv:
        cmd = [sys.executable, "-m", "mmrbench", "eval", "--model", "openai:gpt-4o", "--base-url", srv.base_url,
               "--data", str(manifest), "--concurrency", "2", "--no-progress"]
        proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        pred_file = killed / "predictions.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline:
            if pred_file.exists() and pred_file.read_bytes().count(b"\n") >= len(tests) // 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        first = [json.loads(line)["id"] for line in pred_file.read_text().splitlines() if line.strip()]
        assert len(tests) // 2 <= len(first) < len(tests)
        assert not (killed / "result.json").exists()
        n_before = len(srv.requests)

        rc = main(cmd[3:] + ["--out", str(killed)])
        assert rc == 0
        resumed = [index[r.image_digests[-1]].id for r in srv.requests[n_before:]]
        rc = main(cmd[3:] + ["--out", str(full)])
        assert rc == 0
    # nothing answered before the kill was asked again; everything else was asked exactly once
    assert not set(resumed) & set(first)
    assert sorted(resumed) == sorted({s.id for s in tests} - set(first))
    final = [json.loads(line)["id"] for line in (killed / "predictions.jsonl").read_text().splitlines()]
    assert sorted(final) == sorted(s.id for s in tests)
    assert read_result(killed).metrics == read_result(full).metrics == expected_metrics(manifest)


def test_unreadable_image_is_an_error_line_not_a_crash(manifest, tmp_path):
    m = read_manifest(manifest)
    victim = m.select(split="test")[3]
    (m.resolve(victim.image)).write_bytes(b"not a png")
    with FakeOpenAIServer(lambda req: Reply("<answer>No.</answer>")) as srv:
        card = with_overrides(parse_spec("openai:gpt-4o"), base_url=srv.base_url)
        res = run_eval(card, manifest, tmp_path / "run", EvalOptions(retry=FAST, progress=False, quiet=True))
        n_req = len(srv.requests)
    preds = {p.id: p for p in read_predictions(tmp_path / "run" / "predictions.jsonl")}
    assert preds[victim.id].status == "error" and "cannot read image" in preds[victim.id].error
    assert victim.image.split("/")[-1] in preds[victim.id].error
    assert n_req == len(preds) - 1
    assert sum(v["invalid"] for v in res.metrics["subdatasets"].values()) == 1


def test_prompt_variants_shape_requests(manifest, tmp_path):
    seen = {}
    with FakeOpenAIServer(lambda req: Reply("<answer>No.</answer>")) as srv:
        for variant in ("no_reference", "domain_knowledge"):
            n0 = len(srv.requests)
            rc = main(["eval", "--model", "openai:m", "--base-url", srv.base_url, "--data", str(manifest),
                       "--out", str(tmp_path / variant), "--limit", "4", "--no-progress",
                       f"--{variant.replace('_', '-')}"])
            assert rc == 0
            seen[variant] = srv.requests[n0:]
    assert all(len(r.images) == 1 for r in seen["no_reference"])
    assert all("first image" not in r.user_text for r in seen["no_reference"])
    # domain knowledge: the category's anomaly types from the whole manifest
    assert all("hole, scratch" in r.user_text for r in seen["domain_knowledge"])
    assert read_result(tmp_path / "domain_knowledge").protocol["prompt_variant"] == "domain_knowledge"
    assert read_result(tmp_path / "domain_knowledge").dataset["n_samples"] == 4


def test_resume_refuses_a_different_model(manifest, tmp_path):
    answers = tmp_path / "answers.jsonl"
    from runner_data import write_scripted_answers
    write_scripted_answers(manifest, answers)
    out = tmp_path / "run"
    run_eval(parse_spec(f"scripted:{answers}"), manifest, out, EvalOptions(progress=False, quiet=True))
    other = with_overrides(parse_spec(f"scripted:{answers}"), sampling={"temperature": 0.7})
    with pytest.raises(ConfigError, match="sampling"):
        run_eval(other, manifest, out, EvalOptions(progress=False, quiet=True))


def test_missing_key_for_official_endpoint_is_one_line_error(manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rc = main(["eval", "--model", "openai:gpt-4o", "--data", str(manifest), "--out", str(tmp_path / "r"),
               "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY is not set" in err and "Traceback" not in err


def test_detector_spec_delegates_or_errors_clearly(manifest, tmp_path, monkeypatch):
    import mmrbench.runner as runner
    calls = {}

    class FakeModule:
        @staticmethod
        def evaluate_detector(method, manifest, samples, out_dir, recipe=None, weights=None, device="cpu",
                              progress=True):
            from mmrbench.results import Result
            calls.update(method=method, n=len(samples), out=out_dir, device=device)
            return Result(model={"name": method}, dataset={"name": "x"}, metrics={})

    monkeypatch.setitem(sys.modules, "mmrbench.baselines.evaluate", FakeModule)
    res = runner.run_eval(parse_spec("patchcore"), manifest, tmp_path / "pc",
                          EvalOptions(progress=False, quiet=True, device="cpu", limit=16))
    assert res.model == {"name": "patchcore"} and calls["method"] == "patchcore" and calls["n"] == 16
    # the runner records the selection so a verifier re-selects exactly these samples
    written = json.loads((tmp_path / "pc" / "result.json").read_text())
    assert written["dataset"]["limit"] == 16 and written["dataset"]["n_samples"] == 16
    run = json.loads((tmp_path / "pc" / "run.json").read_text())
    assert run["model"]["provider"] == "detector" and run["n_selected"] == 16


def test_eval_on_bundled_synthetic_benchmark(synth_small, tmp_path, monkeypatch):
    """The acceptance command on the bundled benchmark: every test sample asked once, two images each
    (reference first, sent as the files' own bytes), scored exactly like the same answers offline."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    m = read_manifest(synth_small)
    tests = m.select(split="test")
    with FakeOpenAIServer(responder_for(synth_small, by_bytes=True)) as srv:
        rc = main(["eval", "--model", "openai:gpt-4o", "--base-url", srv.base_url, "--data", str(synth_small),
                   "--out", str(tmp_path / "run"), "--concurrency", "8", "--no-progress"])
        requests = list(srv.requests)
    assert rc == 0
    assert len(requests) == len(tests)
    index = bytes_index(synth_small)
    asked = []
    for req in requests:
        assert len(req.images) == 2
        s = index[hashlib.sha256(req.images[1][1]).hexdigest()]
        asked.append(s.id)
        assert req.images[0][1] == m.resolve(s.reference).read_bytes()  # reference first
    assert sorted(asked) == sorted(s.id for s in tests)
    res = read_result(tmp_path / "run")
    assert res.metrics == expected_metrics(synth_small)
    assert set(res.dataset["subdatasets"]) == set(m.subdatasets)
    assert res.dataset["manifest_sha256"] == m.sha256


def test_ctrl_c_leaves_a_resumable_run(manifest, tmp_path):
    from mmrbench.adapters.base import ModelAPI, Response

    class Interrupting(ModelAPI):
        provider = "scripted"
        max_concurrency = 1

        def __init__(self, stop_at):
            super().__init__("m")
            self.calls, self.stop_at = 0, stop_at

        def generate(self, requests):
            self.calls += 1
            if self.calls == self.stop_at:
                raise KeyboardInterrupt
            return [Response("<answer>No.</answer>", image_sizes=[[48, 40], [48, 40]]) for _ in requests]

    card = parse_spec("openai:m")
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_eval(card, manifest, out, EvalOptions(concurrency=1, progress=False, quiet=True), model=Interrupting(6))
    assert json.loads((out / "run.json").read_text())["state"] == "interrupted"
    assert not (out / "result.json").exists()
    first = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(first) == 5
    again = Interrupting(10 ** 6)
    res = run_eval(card, manifest, out, EvalOptions(concurrency=1, progress=False, quiet=True), model=again)
    assert again.calls == 16 - 5
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(s.id for s in read_manifest(manifest).select(split="test"))
    assert sum(v["missing"] for v in res.metrics["subdatasets"].values()) == 0
