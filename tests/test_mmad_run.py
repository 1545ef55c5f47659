"""mmad-v1 requests (prompt text as MMAD sends it, images, grouping) and an end-to-end run through the
OpenAI-compatible loopback server with the real openai provider: predictions, resume, retry of errors,
result.json and both scoring modes."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402
from test_mmad_data import release_dict, write_release  # noqa: E402

from mmrbench.adapters.retry import RetryPolicy  # noqa: E402
from mmrbench.errors import ConfigError, MMRBenchError  # noqa: E402
from mmrbench.mmad.data import load_mmad  # noqa: E402
from mmrbench.mmad.prompts import INSTRUCTION, DomainKnowledge, load_domain_knowledge  # noqa: E402
from mmrbench.mmad.run import evaluate_mmad  # noqa: E402
from mmrbench.mmad.task import MMADTask  # noqa: E402

FAST = RetryPolicy(max_attempts=2, initial_s=0.01, max_wait_s=0.02)


@pytest.fixture()
def release(tmp_path):
    return write_release(tmp_path / "MMAD")


def test_prompt_text_is_mmads(release):
    task = MMADTask(load_mmad(release), shots=1)
    q0, q1 = task.select(limit=1)
    assert q0.id == "DS-MVTec/bottle/test/broken/000.png#0" and q1.id == "DS-MVTec/bottle/test/broken/000.png#1,2,3"
    req = task.build_request(q0)
    [msg] = req.messages
    assert msg.role == "user" and [p.type for p in msg.parts] == ["image", "image", "text"]
    assert [p.path for p in msg.parts[:2]] == ["DS-MVTec/bottle/train/good/001.png", "DS-MVTec/bottle/test/broken/000.png"]
    assert msg.text == (INSTRUCTION + "The first 1 image is the normal sample, which can be used as a template to compare."
                        "The last image is the query imageFollowing is the question list: \n"
                        "Question: Is there any defect in the object? \nA. Yes.\nB. No.\n\n")
    text = task.build_request(q1).messages[0].text
    assert text.endswith("Question: What type of defect? \nA. Crack.\nB. Stain.\nC. Hole.\nD. None.\n\n"
                         "Question: Where is the defect? \nA. Top left.\nB. Center.\nC. Bottom right.\nD. Nowhere.\n\n"
                         "Question: What shape is the object? \nA. Round.\nB. Square.\n\n")
    assert INSTRUCTION.startswith("\nYou are an industrial inspector") and "1. Answer: B.\n" in INSTRUCTION


def test_shots_templates_ask_and_knowledge(release, tmp_path):
    data = load_mmad(release)
    zero = MMADTask(data, shots=0).select(limit=1)[0]
    req = MMADTask(data, shots=0).build_request(zero)
    assert len(req.images) == 1 and "template" not in req.messages[0].text
    two = MMADTask(data, shots=2, templates="random").select(limit=1)[0]
    assert two.templates == ("DS-MVTec/bottle/train/good/001.png", "DS-MVTec/bottle/train/good/000.png")
    assert "The first 2 image is" in MMADTask(data, shots=2).build_request(two).messages[0].text
    sim = MMADTask(data, shots=1, templates="similar").select(limit=1)[0]
    assert sim.templates == ("DS-MVTec/bottle/train/good/000.png",)
    with pytest.raises(MMRBenchError, match=r"field 'similar_templates': 2-shot needs 2 template\(s\), the file lists 1"):
        MMADTask(data, shots=2, templates="similar").select()
    sep = MMADTask(data, ask="separate").select(limit=1)
    assert [q.id.split("#")[1] for q in sep] == ["0", "1", "2", "3"]
    with pytest.raises(ConfigError):
        MMADTask(data, ask="all-at-once")
    assert [q.image.key for q in MMADTask(data).select(datasets=["VisA"])][0].startswith("VisA/")
    a, b = MMADTask(data).select(shard=(0, 2)), MMADTask(data).select(shard=(1, 2))
    assert len(a) + len(b) == len(MMADTask(data).select()) and not {q.id for q in a} & {q.id for q in b}
    # domain knowledge: DS-MVTec is looked up as MVTec, entries joined by newlines, before the template sentence
    dk_path = tmp_path / "dk.json"
    dk_path.write_text(json.dumps({"MVTec": {"bottle": {"broken": " <Broken>\n cracks", "good": "round rim"}}}))
    dk = load_domain_knowledge(dk_path)
    assert dk.for_image("DS-MVTec", "bottle") == " <Broken>\n cracks\nround rim" and dk.for_image("VisA", "candle") is None
    text = MMADTask(data, knowledge=dk).build_request(two).messages[0].text
    assert (INSTRUCTION + "Following is the domain knowledge which contains some type of defect and the normal object "
            "characteristics: \n  <Broken>\n cracks\nround rim" + "The first 2 image") in text
    assert "domain knowledge" not in MMADTask(data, knowledge=DomainKnowledge({})).build_request(two).messages[0].text
    dk_path.write_text(json.dumps({"MVTec": {"bottle": ["x"]}}))
    with pytest.raises(MMRBenchError, match=r"field 'MVTec.bottle'"):
        load_domain_knowledge(dk_path)


def answers_by_question() -> dict[str, str]:
    return {q["Question"]: q["Answer"] for v in release_dict().values() for q in v["conversation"]
            if q["type"] != "Anomaly Detection"}


def responder(req):
    """Answers like a model would: the detection question from the image (normal images are dark in
    the fixture), the lists as numbered 'k. Answer: X.' lines; the VisA normal image gets an answer
    with no letter; every 'What shape' question is answered wrong."""
    text = req.user_text
    questions = re.findall(r"Question: (.*?) \n", text)
    assert len(req.images) == 2  # 1-shot: template + query
    if questions == ["Is there any defect in the object?"]:
        normal = req.pil_images()[-1].getpixel((0, 0))[0] < 100
        return Reply("B" if normal else "Answer: A.")
    known = answers_by_question()
    lines = [f"{k}. Answer: {'B' if q.startswith('What shape') else known[q]}." for k, q in enumerate(questions, 1)]
    return Reply("\n".join(lines))


def test_end_to_end_loopback(release, tmp_path):
    out = tmp_path / "run"
    seen = []

    def respond(req):
        seen.append(req)
        return responder(req)

    with FakeOpenAIServer(respond) as srv:
        srv.enqueue(Reply(status=400))  # the very first request fails for good: an error line, retried on resume
        rep = evaluate_mmad("openai:gpt-4o", release, out, base_url=srv.base_url, retry=FAST)
        n_first = len(srv.requests)
        preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(preds) == 8 and n_first == 8  # 4 images x (AD alone + the rest as one list)
        errors = [p for p in preds if p["status"] != "ok"]
        assert len(errors) == 1 and errors[0]["status"] == "error"  # requests run concurrently: any one got the 400
        bad = errors[0]["id"]
        n_bad = len(bad.split("#")[1].split(","))
        assert rep.counts["total"]["error"] == n_bad and rep.counts["total"]["scored"] == 14  # strict keeps them
        # strict: the errored questions count as wrong
        assert rep.rows["Average"]["Average"] < 100 * 13 / 14

        rep2 = evaluate_mmad("openai:gpt-4o", release, out, base_url=srv.base_url, retry=FAST)
        assert len(srv.requests) == n_first + 1  # resume: only the errored query is asked again
        srv.enqueue(Reply(status=500), Reply(status=500))
        rep3 = evaluate_mmad("openai:gpt-4o", release, out, base_url=srv.base_url, retry=FAST)
        assert len(srv.requests) == n_first + 1  # nothing left to ask

    for r in (rep2, rep3):
        for d in ("DS-MVTec", "VisA"):
            row = r.rows[d]
            assert row["Anomaly Detection"] == 100.0 and row["Defect Classification"] == 100.0
            assert row["Object Classification"] == 100.0
            # Object Analysis: 'What shape' (wrong) + 'How many items' (right)
            assert row["Object Analysis"] == 50.0
            assert (row["Recall"], row["Precision"], row["Overkill"], row["Miss"]) == (100.0, 100.0, 0.0, 0.0)
    res = json.loads((out / "result.json").read_text())
    assert res["protocol"]["name"] == "mmad-v1" and res["protocol"]["shots"] == 1 and res["protocol"]["ask"] == "ad-first"
    assert res["model"]["provider"] == "openai" and res["dataset"]["n_questions"] == 14
    assert res["metrics"]["mode"] == "strict" and res["metrics"]["rows"]["Average"]["Object Analysis"] == 50.0
    assert len(res["predictions_sha256"]) == 64
    # the first request's text is MMAD's prompt, the images as sent are template then query
    for req in seen:
        assert req.user_text.startswith(INSTRUCTION.lstrip("\n")[:60]) or req.user_text.startswith(INSTRUCTION[:60])
        assert "The first 1 image is the normal sample" in req.user_text
        assert "The last image is the query imageFollowing is the question list: \n" in req.user_text


def test_unparseable_answers_strict_vs_compatible(release, tmp_path):
    def respond(req):
        r = responder(req)
        if "Is there any defect" in req.user_text and req.pil_images()[-1].getpixel((0, 0))[0] < 100:
            return Reply("I cannot tell from these images.")  # normal images: no letter at all
        return r

    with FakeOpenAIServer(respond) as srv:
        strict = evaluate_mmad("openai:gpt-4o", release, tmp_path / "s", base_url=srv.base_url, retry=FAST)
        compat = evaluate_mmad("openai:gpt-4o", release, tmp_path / "c", base_url=srv.base_url, retry=FAST,
                               mode="mmad-compatible")
    s, c = strict.rows["VisA"], compat.rows["VisA"]
    assert strict.counts["total"]["unparseable"] == 2 and compat.counts["total"]["scored"] == 12
    # strict: the normal image's unparseable detection answer is an overkill -> AD (0 + 1) / 2
    assert s["Anomaly Detection"] == 50.0 and s["Overkill"] == 100.0 and s["Precision"] == 50.0
    # mmad-compatible: dropped; no normal answer left, so MMAD's 0/0 = 0 rule applies
    assert c["Anomaly Detection"] == 50.0 and c["Overkill"] == 100.0 and c["Precision"] == 100.0
    assert c["Defect Classification"] == s["Defect Classification"] == 100.0


def test_run_dir_settings_must_match(release, tmp_path):
    with FakeOpenAIServer(responder) as srv:
        evaluate_mmad("openai:gpt-4o", release, tmp_path / "r", base_url=srv.base_url, retry=FAST, limit=1)
        with pytest.raises(ConfigError, match=r"run.json: field 'fingerprint': protocol differ"):
            evaluate_mmad("openai:gpt-4o", release, tmp_path / "r", base_url=srv.base_url, retry=FAST, limit=1,
                          ask="separate")
    with pytest.raises(ConfigError, match="is a detector"):
        evaluate_mmad("patchcore", release, tmp_path / "p")


def test_shards_merge_to_the_unsharded_table_with_usage(release, tmp_path):
    from mmrbench.mmad.run import merge_mmad_runs

    def respond(req):
        r = responder(req)
        r.usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
        return r

    with FakeOpenAIServer(respond) as srv:
        whole = evaluate_mmad("openai:gpt-4o", release, tmp_path / "all", base_url=srv.base_url, retry=FAST)
        for i in range(3):
            evaluate_mmad("openai:gpt-4o", release, tmp_path / f"s{i}", base_url=srv.base_url, retry=FAST, shard=(i, 3))
        with pytest.raises(ConfigError, match="do not cover"):
            merge_mmad_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "bad", release)
        evaluate_mmad("openai:gpt-4o", release, tmp_path / "sep", base_url=srv.base_url, retry=FAST, shard=(2, 3),
                      ask="separate")
        with pytest.raises(ConfigError, match="protocol differ"):
            merge_mmad_runs([tmp_path / "s0", tmp_path / "s1", tmp_path / "sep"], tmp_path / "bad2", release)
    merged = merge_mmad_runs([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged", release)
    assert merged.rows == whole.rows and merged.counts == whole.counts
    res = json.loads((tmp_path / "merged" / "result.json").read_text())
    assert res["dataset"]["merged_shards"] == ["0/3", "1/3", "2/3"] and res["model"]["provider"] == "openai"
    assert res["usage"] == {"requests": 8, "prompt_tokens": 800, "completion_tokens": 56}
    whole_res = json.loads((tmp_path / "all" / "result.json").read_text())
    assert whole_res["usage"] == res["usage"]
    # predictions are compacted: one line per request, in question order
    ids = [json.loads(x)["id"] for x in (tmp_path / "merged" / "predictions.jsonl").read_text().splitlines()]
    assert ids == [json.loads(x)["id"] for x in (tmp_path / "all" / "predictions.jsonl").read_text().splitlines()]


def test_result_records_the_estimated_cost_from_usage_and_card_prices(release, tmp_path):
    """A card with published prices: result.json's cost is usage x prices (hand arithmetic); the
    fake server reports fixed usage per request."""
    from mmrbench.cards import parse_spec, with_overrides
    import dataclasses

    card = dataclasses.replace(with_overrides(parse_spec("openai:gpt-4o"), concurrency=1),
                               price_input_per_mtok=2.5, price_output_per_mtok=10.0)

    def respond(req):
        r = responder(req)
        r.usage = {"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020}
        return r

    with FakeOpenAIServer(respond) as srv:
        evaluate_mmad(with_overrides(card, base_url=srv.base_url), release, tmp_path / "run", retry=FAST)
        n = len(srv.requests)
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["usage"] == {"requests": n, "prompt_tokens": 1000 * n, "completion_tokens": 20 * n}
    assert res["cost"]["usd"] == pytest.approx(n * (1000 * 2.5 + 20 * 10.0) / 1e6)
    assert res["cost"]["estimated"] is True


def test_remote_providers_get_the_files_own_bytes_without_a_decode(release, tmp_path, monkeypatch):
    """Like the MMR-AD runner: an API provider sends each image file as it is on disk (no pixel decoded:
    the size comes from the header), and the 1-shot template, shared by every query of its image, is
    marked shared (the provider's encoded-image cache keeps it)."""
    import mmrbench.vision.images as images

    def no_decode(*a, **k):
        raise AssertionError("an image was decoded for a remote provider")

    monkeypatch.setattr(images, "load_rgb", no_decode)
    data = load_mmad(release)
    task = MMADTask(data, shots=1)
    q0 = task.select(limit=1)[0]
    tmpl, query = task.build_request(q0, decode=False).messages[0].parts[:2]
    assert tmpl.shared and not query.shared and tmpl.size is not None and tmpl._image is None
    with FakeOpenAIServer(lambda req: Reply("A")) as srv:
        evaluate_mmad("openai:gpt-4o", release, tmp_path / "run", base_url=srv.base_url, retry=FAST, limit=1)
        assert len(srv.requests) == 2
        for rec in srv.requests:
            sent = [b for _mime, b in rec.images]
            assert sent == [(data.root / q0.templates[0]).read_bytes(), (data.root / q0.image.key).read_bytes()]


def _priced_card(tmp_path, base_url):
    p = tmp_path / "priced.toml"
    p.write_text('name = "priced"\nprovider = "openai"\nmodel_id = "gpt-4o"\n'
                 f'base_url = "{base_url}"\nprice_input_per_mtok = 2.5\nprice_output_per_mtok = 10.0\n'
                 "[sampling]\nmax_new_tokens = 64\n")
    return p


def test_mmad_max_cost_stops_cleanly_and_a_resume_finishes(release, tmp_path, capsys):
    from mmrbench.cli import main

    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}  # 0.0035 USD each
    with FakeOpenAIServer(lambda r: Reply("A", usage=usage)) as srv:
        out = tmp_path / "run"
        args = ["mmad", "eval", "--model", str(_priced_card(tmp_path, srv.base_url)), "--data", str(release),
                "--out", str(out), "--concurrency", "1"]
        assert main(args + ["--max-cost", "0.008"]) == 3
        [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mmrbench: incomplete")]
        assert "cost budget reached" in line
        n_first = len(srv.requests)
        assert 1 <= n_first <= 3  # 2 answers fit in 0.008 USD; the projection stops before the 3rd
        run = json.loads((out / "run.json").read_text())
        assert run["cost"]["budget_reached"] and run["cost"]["spent_usd"] == pytest.approx(0.0035 * n_first)
        assert main(args + ["--max-cost", "0.008"]) == 3 and len(srv.requests) == n_first  # spent: nothing asked
        assert main(args + ["--max-cost", "1"]) == 0 and len(srv.requests) == 8  # a raised budget finishes
    res = json.loads((out / "result.json").read_text())
    assert res["cost"]["usd"] == pytest.approx(8 * 0.0035)
    capsys.readouterr()
    assert main(["mmad", "eval", "--model", "scripted:x", "--data", str(release), "--out", str(tmp_path / "r2"),
                 "--max-cost", "1"]) == 2
    assert "--max-cost needs the model's prices" in capsys.readouterr().err


def test_mmad_dry_run_estimates_without_sending_or_writing(release, tmp_path, capsys):
    from mmrbench.cli import main

    with FakeOpenAIServer(lambda r: Reply("A")) as srv:
        out = tmp_path / "run"
        rc = main(["mmad", "eval", "--model", str(_priced_card(tmp_path, srv.base_url)), "--data", str(release),
                   "--out", str(out), "--dry-run"])
        assert rc == 0 and srv.requests == [] and not out.exists()
    text = capsys.readouterr().out
    # 8 requests (4 images: detection alone + the rest), each a 24x16 template + a 24x16 query:
    # one 512-px tile each by the openai rule, 85 + 170 = 255 tokens, so 8 x 2 x 255 = 4,080
    assert "8 requests selected, 0 already answered, 8 to ask" in text
    assert "images 4,080 by the openai rule" in text and "output tokens <= 512" in text and "at most" in text


def test_local_model_retrained_in_place_is_not_resumed_over(release, tmp_path, monkeypatch):
    """As for mmrbench eval: a local folder's content is part of an MMAD run's fingerprint."""
    pytest.importorskip("transformers")
    import shutil

    from mmrbench.testing.tiny_qwen import build_tiny_qwen25vl

    monkeypatch.setenv("MMRBENCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    build_tiny_qwen25vl(model, seed=0)
    evaluate_mmad(f"hf:{model}", release, tmp_path / "r", limit=1, quiet=True)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["fingerprint"]["weights_sha256"] and run["model"]["weights_sha256"] == run["fingerprint"]["weights_sha256"]
    shutil.rmtree(model)
    build_tiny_qwen25vl(model, seed=1)
    with pytest.raises(ConfigError, match="weights_sha256"):
        evaluate_mmad(f"hf:{model}", release, tmp_path / "r", limit=1, quiet=True)
