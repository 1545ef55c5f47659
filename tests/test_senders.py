"""``eval --processes N``: API requests sent from N sender processes (mmrbench.senders).

What a user relies on: the same answers and files as a thread run, resume across process counts,
AIMD and --max-cost still holding, clear refusals where processes cannot apply, and no sender left
spending after its parent is killed. Throughput figures live in benchmarks/runner_throughput.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fake_openai_server import FakeOpenAIServer, Reply
from PIL import Image

from mmrbench.adapters.registry import _PROVIDERS, register_provider
from mmrbench.adapters.retry import FAST
from mmrbench.cards import parse_spec, with_overrides
from mmrbench.cli import main
from mmrbench.data.manifest import write_manifest
from mmrbench.data.schema import Box, Sample
from mmrbench.errors import ConfigError
from mmrbench.predictions import read_predictions
from mmrbench.runner import EvalOptions, run_eval
from mmrbench.senders import SenderError, split_threads

REPO = Path(__file__).resolve().parents[1]


def _manifest(root: Path, n: int) -> Path:
    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "img/ref.png")
    samples = []
    for i in range(n):
        rel = f"img/q{i}.{'jpg' if i % 3 == 0 else 'png'}"
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(root / rel)
        boxes = [Box(2, 2, 9, 10, "scratch")] if i % 2 else []
        samples.append(Sample(f"S/c{i % 2}/{i}", "S", f"c{i % 2}", "test", rel,
                              "anomalous" if i % 2 else "normal", 20, 16, boxes=boxes, reference="img/ref.png"))
    path = root / "manifest.jsonl"
    write_manifest(path, samples)
    return path


def _by_query(req) -> Reply:
    """The same answer for the same query image, whichever process or thread sends it."""
    digest = hashlib.sha256(req.images[-1][1]).digest()
    return Reply("<answer>Yes</answer> [1, 2, 8, 9]" if digest[0] % 2 else "<answer>No</answer>")


def _card(url: str, k: int):
    return with_overrides(parse_spec("openai:gpt-4o"), base_url=url, concurrency=k)


def test_threads_are_split_evenly():
    assert split_threads(8, 3) == [3, 3, 2] and split_threads(2, 5) == [1, 1] and split_threads(1, 1) == [1]


def test_processes_give_the_answers_of_threads_and_resume_each_other(tmp_path, capfd):
    m = _manifest(tmp_path / "d", 14)
    with FakeOpenAIServer(_by_query) as srv:
        run_eval(_card(srv.base_url, 4), m, tmp_path / "threads", EvalOptions(progress=False, quiet=True, retry=FAST))
        n_threads = len(srv.requests)
        # half with threads, the rest from two processes, in one run folder (processes are not in the fingerprint)
        run_eval(_card(srv.base_url, 4), m, tmp_path / "mixed", EvalOptions(progress=False, quiet=True, retry=FAST,
                                                                            limit=5))
        res = run_eval(_card(srv.base_url, 4), m, tmp_path / "mixed",
                       EvalOptions(progress=False, quiet=True, retry=FAST, processes=2))
        sent = srv.requests[n_threads:]
    assert n_threads == 14 and len(sent) == 14  # 5 by threads, 9 by the senders, none twice
    assert res.run_summary.complete
    # every file went out as its own bytes from the sender processes too
    files = {hashlib.sha256((tmp_path / "d" / f"img/q{i}.{'jpg' if i % 3 == 0 else 'png'}").read_bytes()).hexdigest()
             for i in range(14)}
    assert {hashlib.sha256(r.images[-1][1]).hexdigest() for r in sent} == files
    a = {p.id: p for p in read_predictions(tmp_path / "threads/predictions.jsonl")}
    b = {p.id: p for p in read_predictions(tmp_path / "mixed/predictions.jsonl")}
    assert a.keys() == b.keys()
    for sid in a:
        assert (a[sid].response, a[sid].status, a[sid].image_sizes, a[sid].convention, a[sid].run) == \
               (b[sid].response, b[sid].status, b[sid].image_sizes, b[sid].convention, b[sid].run)
    ra = json.loads((tmp_path / "threads/result.json").read_text())
    rb = json.loads((tmp_path / "mixed/result.json").read_text())
    assert ra["metrics"] == rb["metrics"]  # (the files differ only in each answer's latency_s)
    run = json.loads((tmp_path / "mixed/run.json").read_text())
    assert run["senders"]["processes"] == 2 and run["senders"]["threads"] == [2, 2]
    # the card's warning (no resize rule for pixel boxes) once per run: threads, threads, two senders
    assert capfd.readouterr().err.count("warning: openai:gpt-4o writes pixel boxes") == 3
    assert run["state"] == "complete" and run["n_done_before"] == 5 and run["status_counts"]["ok"] == 9


def test_senders_share_one_limiter_against_a_rate_limited_server(tmp_path):
    m = _manifest(tmp_path / "d", 40)
    with FakeOpenAIServer(lambda r: Reply("<answer>No.</answer>"), latency_s=0.05, rate_limit=40.0, burst=2) as srv:
        retry = FAST.__class__(max_attempts=30, initial_s=0.02, multiplier=1.5, max_wait_s=0.2, jitter=True)
        run_eval(_card(srv.base_url, 16), m, tmp_path / "run",
                 EvalOptions(retry=retry, progress=False, quiet=True, processes=2, min_concurrency=4))
        n_limited = srv.n_limited
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["status_counts"]["ok"] == 40
    stats = run["concurrency"]  # one limiter for both senders: every 429 of either is counted in it
    assert stats["max"] == 16 and stats["min"] == 4 and run["senders"]["threads"] == [8, 8]
    assert stats["decreases"] >= 1 and 4 <= stats["lowest"] < 16 and stats["rate_limited"] == n_limited > 0


def test_max_cost_stops_sender_processes_and_a_resume_finishes(tmp_path, capsys):
    m = _manifest(tmp_path / "d", 12)
    card = tmp_path / "priced.toml"
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}  # 0.0035 USD each
    with FakeOpenAIServer(lambda r: Reply("<answer>No.</answer>", usage=usage), latency_s=0.02) as srv:
        card.write_text(f'name = "priced"\nprovider = "openai"\nmodel_id = "gpt-4o"\nbase_url = "{srv.base_url}"\n'
                        'price_input_per_mtok = 2.5\nprice_output_per_mtok = 10.0\n')
        args = ["eval", "--model", str(card), "--data", str(m), "--out", str(tmp_path / "run"), "--concurrency", "2",
                "--processes", "2", "--no-progress", "--retries", "1"]
        assert main(args + ["--max-cost", "0.012"]) == 3
        assert "cost budget reached" in capsys.readouterr().err
        n_first = len(srv.requests)
        assert 1 <= n_first <= 6  # the projection stops near 3 answers; a few were already handed out
        assert main(args + ["--max-cost", "1"]) == 0
        assert len(srv.requests) == 12
    assert len(read_predictions(tmp_path / "run/predictions.jsonl")) == 12


def test_processes_are_refused_where_they_cannot_apply(tmp_path, capsys):
    m = _manifest(tmp_path / "d", 2)
    with FakeOpenAIServer(lambda r: Reply("No.")) as srv:
        with pytest.raises(ConfigError, match="at least as many concurrent requests"):
            run_eval(_card(srv.base_url, 2), m, tmp_path / "r1", EvalOptions(progress=False, quiet=True, processes=3))
        assert srv.requests == []
    with pytest.raises(ConfigError, match="built from its card"):
        run_eval(parse_spec("openai:gpt-4o"), m, tmp_path / "r2", EvalOptions(progress=False, quiet=True, processes=2),
                 model=object())
    assert main(["eval", "--model", "hf:/nonexistent", "--data", str(m), "--out", str(tmp_path / "r3"),
                 "--processes", "0"]) != 0
    assert "processes" in capsys.readouterr().err


def test_local_engines_are_told_to_use_batches_before_loading(tmp_path, monkeypatch):
    m = _manifest(tmp_path / "d", 2)
    import mmrbench.cards as cards

    def no_load(*a, **kw):  # the refusal comes from the provider's class, before any weights load
        raise AssertionError("the model was built")

    monkeypatch.setattr(cards, "create_model", no_load)
    card = with_overrides(parse_spec("hf:/nowhere/qwen"), concurrency=4)
    with pytest.raises(ConfigError, match="--batch-size for local engines"):
        run_eval(card, m, tmp_path / "run", EvalOptions(progress=False, quiet=True, processes=2))


def test_a_sender_that_cannot_build_its_model_fails_the_run_with_the_reason(tmp_path):
    # a provider registered at run time exists in this process only: the spawned senders do not know it
    register_provider("runtime-only", "mmrbench.adapters.openai_api:OpenAIModel", "api", "test")
    try:
        m = _manifest(tmp_path / "d", 4)
        with FakeOpenAIServer(lambda r: Reply("No.")) as srv:
            card = with_overrides(parse_spec("openai:gpt-4o"), base_url=srv.base_url, concurrency=2)
            card = card.__class__(**{**card.__dict__, "provider": "runtime-only"})
            with pytest.raises(SenderError, match="could not start its model.*unknown provider 'runtime-only'"):
                run_eval(card, m, tmp_path / "run", EvalOptions(progress=False, quiet=True, processes=2))
            assert srv.requests == []
        run = json.loads((tmp_path / "run/run.json").read_text())
        assert run["state"] == "interrupted" or run["n_answered"] == 0
    finally:
        _PROVIDERS.pop("runtime-only", None)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmd:
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_senders_exit_when_their_parent_is_killed(tmp_path):
    m = _manifest(tmp_path / "d", 8)
    with FakeOpenAIServer(lambda r: Reply("No."), latency_s=60) as srv:  # every request hangs
        script = textwrap.dedent(f"""
            from mmrbench.cards import parse_spec, with_overrides
            from mmrbench.runner import EvalOptions, run_eval
            card = with_overrides(parse_spec("openai:gpt-4o"), base_url={srv.base_url!r}, concurrency=4)
            run_eval(card, {str(m)!r}, {str(tmp_path / "run")!r}, EvalOptions(progress=False, quiet=True, processes=2))
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(srv.requests) < 4:  # both senders are sending
                time.sleep(0.1)
            assert len(srv.requests) >= 4
            senders = _children(proc.pid)
            assert len(senders) == 2
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in senders):
            time.sleep(0.1)
        assert not any(_alive(p) for p in senders)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_stops_the_senders_and_keeps_the_answers(tmp_path):
    m = _manifest(tmp_path / "d", 8)
    # samples 0-3 answer at once, 4-7 hang until the test ends
    hanging = {(tmp_path / "d" / "img").joinpath(f"q{i}.{'jpg' if i % 3 == 0 else 'png'}").read_bytes()
               for i in range(4, 8)}

    def answer(req):
        return Reply("No.", delay_s=60 if req.images[-1][1] in hanging else 0)

    with FakeOpenAIServer(answer) as srv:
        cmd = [sys.executable, "-m", "mmrbench", "eval", "--model", "openai:gpt-4o", "--base-url", srv.base_url,
               "--data", str(m), "--out", str(tmp_path / "run"), "--concurrency", "8", "--processes", "2",
               "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(srv.requests) < 8:
                time.sleep(0.1)
            senders = _children(proc.pid)
            time.sleep(0.5)  # the quick answers reach the harness
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the whole process group
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in err
    assert len(senders) == 2 and not any(_alive(p) for p in senders)
    kept = read_predictions(tmp_path / "run/predictions.jsonl")
    assert sorted(p.id for p in kept) == sorted(f"S/c{i % 2}/{i}" for i in range(4)) and all(p.status == "ok" for p in kept)
