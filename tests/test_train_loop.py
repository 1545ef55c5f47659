"""The trainer end to end on a tiny Qwen2.5-VL, on CPU: SFT, GRPO, checkpoints, resume, evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from mmrbench.adapters.base import ModelAPI, Response  # noqa: E402
from mmrbench.coords import from_original  # noqa: E402
from mmrbench.data.manifest import read_manifest  # noqa: E402
from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir  # noqa: E402
from mmrbench.train.recipe import load_recipe  # noqa: E402
from train_toydata import write_toy_manifest  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model of 160k parameters gains nothing from threads, and on a shared CPU intra-op threads
    spin against each other (40x slower under load), so the tests run single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_qwen25vl_dir(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_manifest(tmp_path_factory.mktemp("toy"))


def sft_recipe(tiny, toy, **ov):
    base = {"model.base": str(tiny), "data.manifest": str(toy), "sft.max_steps": 2, "sft.batch_size": 2,
            "sft.lr": 1e-2, "sft.warmup_ratio": 0.0, "sft.save_steps": 1}
    base.update(ov)
    return load_recipe(None, "sft", base)


@pytest.fixture(scope="module")
def sft_run(tiny, toy, tmp_path_factory):
    from mmrbench.train.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    res = run_sft(sft_recipe(tiny, toy), out, progress=False)
    return out, res


def lora_tensors(d: Path) -> dict:
    return load_file(str(d / "adapter_model.safetensors"))


def test_sft_trains_saves_and_logs(sft_run):
    out, res = sft_run
    assert res.steps == 2 and torch.isfinite(torch.tensor(res.last_loss))
    sd = lora_tensors(out)
    assert sd and all("visual" not in k for k in sd), "the vision tower must not be adapted"
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in sd.items()), "LoRA B starts at 0 and must move"
    log = [json.loads(x) for x in (out / "sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 and r["tokens"] > 0 for r in log)
    assert (out / "checkpoint-2" / "optimizer.pt").exists()
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["step"] == 2


def test_sft_resume_continues_from_checkpoint(sft_run, tiny, toy, tmp_path):
    """A run stopped after step 1 and resumed ends with exactly the uninterrupted run's adapter."""
    import shutil

    from mmrbench.train.sft import run_sft

    out = tmp_path / "run"
    shutil.copytree(sft_run[0], out)
    shutil.rmtree(out / "checkpoint-2")  # as if it crashed during step 2
    (out / "adapter_model.safetensors").unlink()
    run_sft(sft_recipe(tiny, toy), out, progress=False)
    log = [json.loads(x) for x in (out / "sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # step 2's old line replaced, not duplicated
    a, b = lora_tensors(out), lora_tensors(sft_run[0])
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_refuses_a_checkpoint_trained_with_other_settings(sft_run, tiny, toy, tmp_path):
    """Resuming with changed settings would finish another configuration's run under this recipe (and the
    saved recipe would be overwritten): SFT and GRPO stop, naming what differs, before any model loads;
    resume=False starts over."""
    import shutil

    from mmrbench.errors import ConfigError
    from mmrbench.train.grpo import run_grpo
    from mmrbench.train.sft import run_sft

    out = tmp_path / "run"
    shutil.copytree(sft_run[0], out)
    saved = (out / "sft_recipe.json").read_text()
    with pytest.raises(ConfigError, match=r"sft\.lr: 0\.01 -> 0\.02.*--no-resume"):
        run_sft(sft_recipe(tiny, toy, **{"sft.lr": 0.02}), out, progress=False)
    assert (out / "sft_recipe.json").read_text() == saved  # the first run's record is kept
    run_sft(sft_recipe(tiny, toy), out, progress=False)  # the same settings resume (here: nothing left to do)
    run_sft(sft_recipe(tiny, toy, **{"sft.lr": 0.02}), out, resume=False, progress=False)
    assert json.loads((out / "sft_recipe.json").read_text())["sft"]["lr"] == 0.02

    g = tmp_path / "grpo"
    (g / "checkpoint-1").mkdir(parents=True)
    (g / "checkpoint-1" / "trainer_state.json").write_text('{"step": 1}')
    (g / "grpo_recipe.json").write_text(json.dumps(grpo_recipe(tiny, toy).to_json()))
    with pytest.raises(ConfigError, match=r"grpo\.max_steps: 1 -> 2"):
        run_grpo(grpo_recipe(tiny, toy, **{"grpo.max_steps": 2}), g, progress=False)


def test_labels_cover_the_assistant_turn_only(tiny, toy):
    from mmrbench.train.collate import IGNORE_INDEX, sft_batch
    from mmrbench.train.common import load_builder
    from mmrbench.adapters.hf_inputs import load_processor

    proc = load_processor(tiny)
    builder = load_builder(sft_recipe(tiny, toy), proc)
    exs = [builder.example(0), builder.example(1)]
    b = sft_batch(proc, exs)
    for i, ex in enumerate(exs):
        kept = b["input_ids"][i][b["labels"][i] != IGNORE_INDEX]
        assert proc.tokenizer.decode(kept) == ex.target + "<|im_end|>\n"
    # row 0 is shorter: its right padding is masked
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_targets_use_the_policy_frame_and_the_eval_prompt(tiny, tmp_path):
    from mmrbench.adapters.hf_inputs import encode, chat_messages, load_processor
    from mmrbench.adapters.qwen_vision import sizes_from_grid
    from mmrbench.data.schema import Box, Sample
    from mmrbench.requests_build import build_request
    from mmrbench.train.data import DataOptions, ExampleBuilder
    from PIL import Image

    Image.new("RGB", (200, 100)).save(tmp_path / "q.png")
    Image.new("RGB", (200, 100)).save(tmp_path / "r.png")
    s = Sample(id="a", subdataset="T", category="c", split="train", image="q.png", reference="r.png",
               label="anomalous", width=200, height=100, boxes=[Box(20, 10, 100, 60, "dent")],
               reasoning="<think>I see a dent.</think><answer>Yes. {'bbox_2d': [1, 2, 3, 4], 'label': 'dent'}</answer>")
    proc = load_processor(tiny)
    ex = ExampleBuilder([s], tmp_path, proc, DataOptions()).example(0)
    batch = encode(proc, [chat_messages(ex.messages)])
    assert ex.sent_size == sizes_from_grid(batch["image_grid_thw"], 4)[-1]  # what the vision tower saw
    w, h = ex.sent_size
    assert (w, h) != (200, 100)
    c = [int(round(v)) for v in from_original((20, 10, 100, 60), "pixel", ex.sent_size, (200, 100))]
    assert ex.target == f"<think>I see a dent.</think><answer>Yes. {{'bbox_2d': [{c[0]}, {c[1]}, {c[2]}, {c[3]}], 'label': 'dent'}}</answer>"
    req = build_request(s, tmp_path)
    assert [m.text for m in ex.messages] == [m.text for m in req.messages]
    only = ExampleBuilder([s], tmp_path, proc, DataOptions(answer_only=True)).example(0)
    assert only.target.startswith("<answer>Yes.")


def test_reference_log_probs_equal_the_base_model(sft_run, tiny):
    """Adapter disabled == the base model, and the trained adapter does change the log-probs."""
    from mmrbench.testing.tiny_qwen import load_tiny
    from mmrbench.train.collate import prompt_inputs
    from mmrbench.train.rollout import completion_log_probs, pad_completions, text_to_completion

    _, res = sft_run
    pol = res.policy
    pol.model.eval()
    from mmrbench.train.common import load_builder
    ex = load_builder(sft_recipe(tiny, read_manifest_path(res)), pol.processor).example(1)
    prompt = prompt_inputs(pol.processor, ex.messages)
    ids, mask = pad_completions([text_to_completion(pol, ex.target, 64), text_to_completion(pol, "<answer>No.</answer>", 64)],
                                pol.pad_id())
    with torch.no_grad():
        with pol.model.disable_adapter():
            ref = completion_log_probs(pol, prompt, ids, mask)
        cur = completion_log_probs(pol, prompt, ids, mask)
        base_model, _ = load_tiny(tiny)
        from mmrbench.train.policy import Policy
        base = completion_log_probs(Policy(base_model, pol.processor, pol.device, pol.dtype), prompt, ids, mask)
    m = mask.bool()
    assert torch.allclose(ref[m], base[m], atol=1e-5)
    assert not torch.allclose(cur[m], base[m], atol=1e-3)


def read_manifest_path(res):
    return json.loads((res.out_dir / "sft_recipe.json").read_text())["data"]["manifest"]


def grpo_recipe(tiny, toy, **ov):
    base = {"model.base": str(tiny), "data.manifest": str(toy), "grpo.max_steps": 1, "grpo.prompt_batch": 2,
            "grpo.mini_batch": 1, "grpo.group_size": 4, "grpo.max_new_tokens": 72, "grpo.lr": 1e-2,
            "grpo.warmup_ratio": 0.0, "data.answer_only": True}
    base.update(ov)
    return load_recipe(None, "grpo", base)


def test_grpo_step_from_sft_adapter(sft_run, tiny, toy, tmp_path):
    from mmrbench.train.grpo import run_grpo

    sft_dir = sft_run[0]
    out = tmp_path / "grpo"
    tr = run_grpo(grpo_recipe(tiny, toy, **{"grpo.init_adapter": str(sft_dir)}), out, progress=False)
    rec = json.loads((out / "grpo_log.jsonl").read_text().splitlines()[0])
    for k in ("reward", "accuracy", "kl", "clip_frac", "zero_adv_frac", "response_len", "loss"):
        assert k in rec and rec[k] == rec[k]  # present and not NaN
    assert 0 <= rec["zero_adv_frac"] <= 1 and rec["kl"] >= 0
    # the guaranteed positive makes groups informative: the policy alone almost never answers right
    assert rec["zero_adv_frac"] < 1
    before, after = lora_tensors(sft_dir), lora_tensors(out)
    assert any(not torch.allclose(before[k], after[k]) for k in before), "GRPO must move the LoRA weights"
    assert (out / "checkpoint-1" / "trainer_state.json").exists()
    assert tr.total_steps == 1


class OppositeAPI(ModelAPI):
    """An external 'MLLM' that answers the opposite-hint prompt with the wrong verdict."""

    provider = "test"

    def __init__(self):
        super().__init__("opposite")
        self.seen = []

    def generate(self, requests):
        self.seen.extend(requests)
        return [Response("<think>It looks fine.</think><answer>No.</answer>") for _ in requests]


def test_contrastive_negatives_when_a_group_is_all_positive(tiny, toy, tmp_path, monkeypatch):
    """All rollouts right -> two are swapped for opposite-hint negatives (API, manifest, policy)."""
    import mmrbench.train.grpo as grpo_mod
    from mmrbench.train.grpo import GRPOTrainer
    from mmrbench.train.rollout import text_to_completion

    api = OppositeAPI()
    tr = GRPOTrainer(grpo_recipe(tiny, toy), tmp_path / "g", negatives_api=api, progress=False)
    ex = tr.builder.example(1)  # anomalous
    assert ex.sample.is_anomalous
    monkeypatch.setattr(grpo_mod, "generate", lambda pol, prompt, n, **kw: [text_to_completion(pol, ex.target, 72)] * n)
    g = tr.rollout_group(ex)
    assert g.sources == ["negative:api", "negative:api", "policy", "positive"]
    assert "Hint" in api.seen[0].messages[1].text and "normal, with no anomaly" in api.seen[0].messages[1].text
    assert g.accuracy == [0.0, 0.0, 1.0, 1.0]
    assert g.rewards == pytest.approx([-0.2, -0.2, 1.0, 1.0])
    assert g.advantages[0] < 0 < g.advantages[3]
    # precomputed negatives in the manifest win over the API
    ex.sample.extra["negatives"] = ["<answer>No.</answer>"]
    g = tr.rollout_group(ex)
    assert g.sources[:2] == ["negative:manifest", "policy"]
    # without an API the policy writes them under the opposite hint
    ex.sample.extra.pop("negatives")
    tr.negatives.api = None
    g = tr.rollout_group(ex)
    assert g.sources[:2] == ["negative:policy", "negative:policy"]
    # with contrastive sampling off, the group is G plain samples
    tr.cfg.contrastive = False
    g = tr.rollout_group(ex)
    assert g.sources == ["policy"] * 4 and g.advantages.abs().sum() == 0


def test_trained_adapter_evaluates_with_hf_provider(sft_run, toy, tmp_path):
    from mmrbench.adapters.registry import instantiate as create_model
    from mmrbench.requests_build import build_request
    from mmrbench.adapters.base import GenerationConfig

    out, _ = sft_run
    model = create_model("hf", str(out))  # base resolved from adapter_config.json
    m = read_manifest(toy)
    reqs = [build_request(s, m.root, config=GenerationConfig(max_new_tokens=8)) for s in m.samples[:2]]
    resps = model.generate(reqs)
    assert len(resps) == 2 and all(r.status in ("ok", "truncated") for r in resps)
    assert model.describe().get("lora") == str(out)


def test_cli_train_sft_and_recipe_errors(tiny, toy, tmp_path, capsys):
    from mmrbench.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "sft", "--recipe", "baselines/anomaly-r1/sft.toml", "--model", str(tiny), "--data", str(toy),
               "--out", str(out), "--device", "cpu", "--set", "sft.max_steps=1", "--set", "sft.batch_size=2",
               "--set", "model.gradient_checkpointing=false", "--answer-only"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and (out / "adapter_config.json").exists()
    rec = json.loads((out / "sft_recipe.json").read_text())
    assert rec["data"]["answer_only"] is True and rec["sft"]["lr"] == 2e-5
    assert main(["train", "sft", "--out", str(tmp_path / "x"), "--set", "sft.lr_typo=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", "grpo", "--out", str(tmp_path / "x"), "--data", str(toy), "--model", str(tiny),
                 "--init-adapter", str(tmp_path)]) == 2
    assert "not an adapter folder" in capsys.readouterr().err


def test_export_merges_adapter_and_head_into_a_self_contained_folder(tiny, toy, tmp_path, capsys):
    """`mmrbench train export`: the merged folder answers exactly as base + adapter did (greedy), holds
    no adapter, and records which adapter it came from."""
    from mmrbench.adapters.base import GenerationConfig
    from mmrbench.adapters.registry import instantiate as create_model
    from mmrbench.cli import main
    from mmrbench.data.manifest import file_sha256
    from mmrbench.requests_build import build_request
    from mmrbench.train.sft import run_sft

    adapter = tmp_path / "sft"
    # lm_head trained fully (modules_to_save) as the mini reference model does: the merge must keep it
    run_sft(sft_recipe(tiny, toy, **{"sft.save_steps": 0, "lora.modules_to_save": ["lm_head"]}), adapter, progress=False)
    out = tmp_path / "merged"
    assert main(["train", "export", "--adapter", str(adapter), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["out"] == str(out) and info["base"] == str(tiny)
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    recorded = json.loads((out / "export.json").read_text())
    assert recorded["adapter_weights_sha256"] == file_sha256(adapter / "adapter_model.safetensors")
    assert recorded["modules_to_save"] == ["lm_head"]

    m = read_manifest(toy)
    reqs = [build_request(s, m.root, config=GenerationConfig(max_new_tokens=12, temperature=0.0)) for s in m.samples[:3]]
    with_adapter = [r.text for r in create_model("hf", str(adapter), device="cpu").generate(reqs)]
    merged = [r.text for r in create_model("hf", str(out), device="cpu").generate(reqs)]
    assert merged == with_adapter
    base_only = [r.text for r in create_model("hf", str(tiny), device="cpu").generate(reqs)]
    assert base_only != with_adapter  # the adapter changed the answers, so the equality above means something

    # a second export into the same folder is refused, not overwritten
    from mmrbench.errors import ConfigError
    from mmrbench.train.export import export_merged
    with pytest.raises(ConfigError, match="not empty"):
        export_merged(adapter, out)
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        export_merged(tmp_path, tmp_path / "x")
