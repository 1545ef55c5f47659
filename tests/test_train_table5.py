"""benchmarks/table5_mini.py --quick: every shipped ablation recipe trains, is scored by the protocol's
scorer on the held-out split, and writes a result.json the board places next to Table 5."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("table5_mini", ROOT / "benchmarks" / "table5_mini.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["table5_mini"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_mean_interval_hand_computed():
    t5 = load_script()
    # 0.6, 0.7, 0.8: mean 0.7, sample sd 0.1, half-width 4.303 * 0.1 / sqrt(3) = 0.24844
    m, h = t5.mean_interval([0.6, 0.7, 0.8])
    assert m == pytest.approx(0.7) and h == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    assert t5.mean_interval([0.5]) == (0.5, None)


def test_rows_name_the_shipped_recipes():
    from mmrbench.leaderboard.reference import ABLATION_RECIPES

    t5 = load_script()
    assert len(t5.ROWS) == 7
    for row in t5.ROWS:
        assert (ROOT / "baselines/anomaly-r1" / f"{row.recipe}.toml").is_file()
        assert row.recipe.split("/")[-1] in ABLATION_RECIPES


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path, capsys):
    from mmrbench.leaderboard.board import ablation_recipe
    from mmrbench.leaderboard.schema import check_result
    from mmrbench.results import read_result

    t5 = load_script()
    # two seeds asked, a budget that the first seed already uses up: the second is not started
    assert t5.main(["--quick", "--out", str(tmp_path), "--seeds", "0,1", "--budget-min", "0.001"]) == 0
    printed = capsys.readouterr().out
    assert "seeds not run (time budget 0 min): [1]" in printed and not (tmp_path / "seed1").exists()
    for row in t5.ROWS:
        assert row.label in printed
    summary = json.loads((tmp_path / "table5.json").read_text())
    assert set(summary["rows"]) == {r.label for r in t5.ROWS} and summary["seeds"] == [0]
    for row in t5.ROWS:
        name = row.recipe.split("/")[-1]
        path = tmp_path / "seed0" / "eval" / name / "result.json"
        d = json.loads(path.read_text())
        check_result(d)  # what `mmrbench submit` validates
        assert ablation_recipe(d) == name
        assert read_result(path).dataset["split"] == "test"
        got = summary["rows"][row.label]["0"]
        # the table's figures are the scorer's counts in that result.json
        det = [c["det_counts"] for s in d["metrics"]["subdatasets"].values() for c in s["categories"]]
        correct = sum(c["tp"] + c["tn"] for c in det)
        total = sum(sum(c.values()) for c in det)
        assert got["det"] == pytest.approx(correct / total)
    # the prompt variant of each row is the recipe's
    assert json.loads((tmp_path / "seed0/eval/no-reference-grpo/result.json").read_text())["protocol"]["prompt_variant"] == "no_reference"
    assert json.loads((tmp_path / "seed0/eval/domain-knowledge-grpo/result.json").read_text())["protocol"]["prompt_variant"] == "domain_knowledge"
    # w/o cold start trained from a fresh adapter, the others from their SFT run
    rec = json.loads((tmp_path / "seed0/no-cold-start-grpo/grpo_recipe.json").read_text())
    assert rec["grpo"]["init_adapter"] == ""
    rec = json.loads((tmp_path / "seed0/answer-only-grpo/grpo_recipe.json").read_text())
    assert rec["data"]["answer_only"] is True and rec["grpo"]["init_adapter"].endswith("answer-only-sft")


def test_combine_merges_parallel_runs_and_pairs_grpo_with_its_sft(tmp_path, capsys):
    t5 = load_script()
    data = {"train": 10, "eval": 4, "majority_rate": 0.5}

    def run(name, seeds, full, sft):
        d = tmp_path / name
        d.mkdir()
        rows = {"Anomaly-R1 (full)": {str(s): {"det": f, "loc": 0.0} for s, f in zip(seeds, full)},
                "w/o RL": {str(s): {"det": f, "loc": 0.0} for s, f in zip(seeds, sft)}}
        (d / "table5.json").write_text(json.dumps({"data": data, "seeds": seeds, "rows": rows}))
        return d

    a = run("a", [0, 2], [0.7, 0.8], [0.6, 0.7])
    b = run("b", [1], [0.75], [0.75])
    assert t5.main(["--combine", f"{a},{b}"]) == 0
    out = capsys.readouterr().out
    # full 0.7, 0.75, 0.8: mean 75.0, sd 5 points, half-width 4.303 * 5 / sqrt 3 = 12.4
    assert "Anomaly-R1 (full)" in out and " 75.0 ± 12.4" in out and "s0:70.0/0.0  s1:75.0/0.0  s2:80.0/0.0" in out
    # paired differences 10, 0, 10 points: mean 6.7, sd 5.77, half-width 14.3
    assert "GRPO - SFT (paired)" in out and "  6.7 ± 14.3" in out and "over seeds [0, 1, 2]" in out
    with pytest.raises(SystemExit, match="seed 0 is in two"):
        t5.main(["--combine", f"{a},{a}"])


@pytest.mark.slow
def test_quick_mode_on_a_pretrained_base_with_lora_only(tmp_path, capsys):
    t5 = load_script()
    assert t5.main(["--quick", "--out", str(tmp_path), "--rows", "no-rl-sft", "--pretrain-steps", "2",
                    "--pretrain-layer", "1", "--lora-only"]) == 0
    bases = list((tmp_path / "seed0").glob("model-v3-*"))
    assert len(bases) == 1 and bases[0].name.endswith("-pt2b8lr0.001c0.7a1L1")  # the setting names the base
    assert json.loads((bases[0] / "pretrain.json").read_text())["steps"] == 2
    adapter = json.loads((tmp_path / "seed0/sft/adapter_config.json").read_text())
    assert not adapter["modules_to_save"]  # LoRA alone: the pretrained output head is not trained
    assert adapter["base_model_name_or_path"] == str(bases[0])
    assert "w/o RL" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_mode_with_attention_supervision_in_pretraining_and_sft(tmp_path, capsys):
    t5 = load_script()
    assert t5.main(["--quick", "--out", str(tmp_path), "--rows", "no-rl-sft", "--pretrain-steps", "2",
                    "--pretrain-layer", "1", "--pretrain-attn", "1", "--pretrain-attn-layer", "2",
                    "--sft-attn-loss", "0.5", "--sft-attn-layer", "2", "--rope-theta", "20"]) == 0
    bases = list((tmp_path / "seed0").glob("model-v3-*"))
    assert len(bases) == 1 and bases[0].name.endswith("-rt20-pt2b8lr0.001c0.7a1L1t1@2")  # the setting names the base
    assert json.loads((bases[0] / "config.json").read_text())["text_config"]["rope_parameters"]["rope_theta"] == 20
    sft_log = [json.loads(line) for line in (tmp_path / "seed0/sft/sft_log.jsonl").open()]
    assert sft_log and all("attention_loss" in r and r["attention_loss"] > 0 for r in sft_log)
    assert "w/o RL" in capsys.readouterr().out


def test_command_line_sets_the_pretraining_and_the_sft_attention_loss(tmp_path, monkeypatch):
    """--pretrain-attn* build the PretrainConfig; --sft-attn-* reach the SFT recipe that train_sft loads."""
    import mmrbench.train.sft as sft_mod

    t5 = load_script()
    assert t5.pretrain_config(argparse.Namespace(pretrain_steps=0)) is None
    cfg = t5.pretrain_config(argparse.Namespace(pretrain_steps=5, pretrain_layer=2, pretrain_coord=0.0,
                                                pretrain_attn=1.0, pretrain_attn_layer=3))
    assert (cfg.steps, cfg.token_layer, cfg.attn_aux, cfg.attn_layer) == (5, 2, 1.0, 3)

    seen = []
    monkeypatch.setattr(sft_mod, "run_sft", lambda r, out, progress: seen.append(r.train))
    base = t5.mini_overrides(tmp_path / "base", tmp_path / "m.jsonl", ["lm_head"], 0)
    for weight, layer in ((0.0, 0), (0.5, 3)):
        t5.train_sft("sft", base, argparse.Namespace(sft_steps=7, sft_lr=1e-3, sft_attn_loss=weight,
                                                     sft_attn_layer=layer), 0, tmp_path / f"sft{weight}")
    assert [(t.attention_loss_weight, t.attention_loss_layer, t.max_steps) for t in seen] == [(0.0, 0, 7), (0.5, 3, 7)]


def test_grpo_beta_from_the_command_line_or_the_recipe(tmp_path, monkeypatch):
    """--grpo-beta overrides the KL weight of every GRPO stage; unset (-1) keeps each recipe's own beta."""
    import mmrbench.train.grpo as grpo_mod

    t5 = load_script()
    seen = []
    monkeypatch.setattr(grpo_mod, "run_grpo", lambda r, out, progress: seen.append(r.train))
    base = t5.mini_overrides(tmp_path / "base", tmp_path / "m.jsonl", ["lm_head"], 0)
    row = next(r for r in t5.ROWS if r.recipe == "grpo")
    recipe_beta = t5.load("grpo", "grpo", base).train.beta
    assert recipe_beta not in (0.0, 0.01)  # else the default and an override could not be told apart

    def grpo(beta):
        a = argparse.Namespace(grpo_steps=2, grpo_lr=1e-4, prompt_batch=2, group=4, mini_batch=2, max_new_tokens=8,
                               grpo_beta=beta, grpo_box_reward="paper")
        t5.train_grpo(row, base, a, 0, {"sft": tmp_path / "sft"}, tmp_path / f"grpo{beta}")

    for beta in (-1.0, 0.0, 0.01):
        grpo(beta)
    assert [t.beta for t in seen] == [recipe_beta, 0.0, 0.01]
    assert t5.FULL["grpo_beta"] == t5.QUICK["grpo_beta"] == -1.0
    # only the sentinel -1 means "the recipe's own": another negative is an error, not silently ignored
    from mmrbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"grpo\.beta must be in \[0, 100\], got -0\.5"):
        grpo(-0.5)
    assert len(seen) == 3


def test_a_finished_stage_is_reused_only_when_trained_with_the_same_recipe(tmp_path, monkeypatch):
    """A stage folder holding an adapter is reused when its saved recipe equals the one asked for; trained
    with other options (or without a saved recipe), the script stops and says which settings differ,
    instead of silently scoring an adapter of another configuration."""
    import mmrbench.train.sft as sft_mod
    from mmrbench.train.common import write_run_info

    t5 = load_script()
    trained = []

    def fake_run_sft(r, out, progress):  # what run_sft leaves behind: an adapter and its recipe
        trained.append(r.train.max_steps)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        write_run_info(out, r, {"steps": r.train.max_steps})

    monkeypatch.setattr(sft_mod, "run_sft", fake_run_sft)
    base = t5.mini_overrides(tmp_path / "base", tmp_path / "m.jsonl", ["lm_head"], 0)

    def sft(steps, attn=0.0):
        return t5.train_sft("sft", base, argparse.Namespace(sft_steps=steps, sft_lr=1e-3, sft_attn_loss=attn,
                                                            sft_attn_layer=3 if attn else 0), 0, tmp_path / "sft")

    sft(7)
    sft(7)  # same options: reused, not retrained
    assert trained == [7]
    with pytest.raises(SystemExit, match=r"sft\.max_steps: 7 -> 9.*--fresh"):
        sft(9)
    with pytest.raises(SystemExit, match=r"sft\.attention_loss_weight: 0\.0 -> 0\.5"):
        sft(7, attn=0.5)
    (tmp_path / "sft" / "sft_recipe.json").unlink()
    with pytest.raises(SystemExit, match="no sft_recipe.json"):
        sft(7)
    assert trained == [7]


def test_quick_mode_from_a_given_base(tmp_path, capsys):
    """--base: every seed trains from that folder; no base is built under --out."""
    t5 = load_script()
    assert t5.main(["--quick", "--out", str(tmp_path / "a"), "--rows", "no-rl-sft"]) == 0
    base = next((tmp_path / "a" / "seed0").glob("model-v3-*"))
    assert t5.main(["--quick", "--out", str(tmp_path / "b"), "--rows", "no-rl-sft", "--base", str(base)]) == 0
    assert not list((tmp_path / "b" / "seed0").glob("model-v3-*"))
    recipe = json.loads((tmp_path / "b" / "seed0" / "sft" / "sft_recipe.json").read_text())
    assert recipe["model"]["base"] == str(base)
    # options that would build a base are refused with --base, not ignored; --layers must be the base's
    with pytest.raises(SystemExit, match="--rope-theta: these build a base"):
        t5.main(["--quick", "--out", str(tmp_path / "c"), "--base", str(base), "--rope-theta", "20"])
    with pytest.raises(SystemExit, match="--layers 4, but the base .* has 2 decoder layers"):
        t5.main(["--quick", "--out", str(tmp_path / "c"), "--base", str(base), "--layers", "4"])


def test_graded_box_reward_runs_beside_the_papers_and_shares_its_sft(tmp_path, capsys):
    """--grpo-box-reward giou: the GRPO stage, its evaluation and its table get their own names in the same
    --out (so the SFT adapter is reused, not retrained), the result names a recipe the board does not take
    for the shipped one, and --combine refuses to pool the two rewards."""
    t5 = load_script()
    out = tmp_path / "r"
    assert t5.main(["--quick", "--out", str(out), "--rows", "grpo,no-rl-sft"]) == 0
    sft_mtime = (out / "seed0" / "sft" / "adapter_config.json").stat().st_mtime_ns
    paper_table = (out / "table5.json").read_text()
    assert t5.main(["--quick", "--out", str(out), "--rows", "grpo,no-rl-sft", "--grpo-box-reward", "giou"]) == 0
    printed = capsys.readouterr().out
    assert "grpo.box_reward = 'giou'" in printed
    assert (out / "seed0" / "sft" / "adapter_config.json").stat().st_mtime_ns == sft_mtime
    recipe = json.loads((out / "seed0" / "grpo-giou" / "grpo_recipe.json").read_text())
    assert recipe["grpo"]["box_reward"] == "giou"
    assert json.loads((out / "seed0" / "grpo" / "grpo_recipe.json").read_text())["grpo"]["box_reward"] == "paper"
    result = json.loads((out / "seed0" / "eval" / "grpo-giou" / "result.json").read_text())
    assert result["model"]["recipe"] == "grpo-giou"
    from mmrbench.leaderboard.board import ablation_recipe

    assert ablation_recipe(result) is None  # not filed beside Table 5's row for the shipped recipe
    assert (out / "table5.json").read_text() == paper_table
    giou = json.loads((out / "table5-giou.json").read_text())
    assert giou["args"]["grpo_box_reward"] == "giou" and "Anomaly-R1 (full)" in giou["rows"]
    assert t5.main(["--combine", str(out / "table5-giou.json")]) == 0
    assert "'giou' (graded" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="box reward 'giou'"):
        t5.main(["--combine", f"{out},{out / 'table5-giou.json'}"])
