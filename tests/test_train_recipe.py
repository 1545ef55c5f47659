"""Recipes: paper defaults, extends, overrides, typed errors, the Table-5 ablation files and flags."""
import argparse
from pathlib import Path

import pytest

from mmrbench.errors import ConfigError
from mmrbench.train.recipe import load_recipe, parse_value

REPO = Path(__file__).resolve().parents[1]
R1 = REPO / "baselines" / "anomaly-r1"


def test_paper_defaults():
    sft = load_recipe(R1 / "sft.toml", "sft")
    assert (sft.lora.r, sft.lora.alpha, sft.lora.target) == (16, 16, "language")
    t = sft.train
    assert (t.lr, t.batch_size, t.epochs, t.warmup_ratio, t.weight_decay) == (2e-5, 4, 3.0, 0.1, 0.1)
    g = load_recipe(R1 / "grpo.toml", "grpo").train
    assert (g.prompt_batch, g.group_size, g.mini_batch, g.clip_eps, g.beta, g.lr) == (32, 8, 8, 0.2, 0.001, 2e-6)
    assert (g.warmup_ratio, g.weight_decay, g.max_prompt_tokens, g.max_new_tokens, g.temperature, g.top_p) == \
        (0.1, 0.01, 2048, 512, 1.0, 1.0)
    assert g.contrastive and g.n_negatives == 2
    # the built-in defaults are the same as the files
    assert load_recipe(None, "grpo").train == g.__class__(**{**vars(g), "init_adapter": "", "save_steps": 0})


def test_ablation_recipes():
    a = R1 / "ablations"
    assert load_recipe(a / "answer-only-sft.toml", "sft").data.answer_only is True
    assert load_recipe(a / "no-reference-grpo.toml", "grpo").data.prompt_variant == "no_reference"
    assert load_recipe(a / "domain-knowledge-sft.toml", "sft").data.prompt_variant == "domain_knowledge"
    assert load_recipe(a / "no-cold-start-grpo.toml", "grpo").train.init_adapter == ""
    nc = load_recipe(a / "no-contrastive-grpo.toml", "grpo")
    assert nc.train.contrastive is False and nc.train.lr == 2e-6  # inherited
    assert load_recipe(a / "no-rl-sft.toml", "sft").train.lr == 2e-5


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_recipe(None, "sft", {"sft.learning_rate": 1e-4})
    with pytest.raises(ConfigError, match="expected int"):
        load_recipe(None, "sft", {"sft.batch_size": "four"})
    with pytest.raises(ConfigError, match="not a \\[sft\\]"):
        load_recipe(R1 / "grpo.toml", "sft")
    with pytest.raises(ConfigError, match="multiple of"):
        load_recipe(None, "grpo", {"grpo.prompt_batch": 10, "grpo.mini_batch": 4})
    with pytest.raises(ConfigError, match="prompt_variant"):
        load_recipe(None, "sft", {"data.prompt_variant": "nope"})
    loop = tmp_path / "a.toml"
    loop.write_text('extends = "a.toml"\n[sft]\n')
    with pytest.raises(ConfigError, match="loops"):
        load_recipe(loop, "sft")
    bad = tmp_path / "b.toml"
    bad.write_text("[sft\n")
    with pytest.raises(ConfigError, match="b.toml"):
        load_recipe(bad, "sft")
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "none.toml", "sft")


def test_overrides_and_values():
    assert parse_value("3") == 3 and parse_value("2e-5") == 2e-5 and parse_value("true") is True
    assert parse_value('["lm_head"]') == ["lm_head"] and parse_value("runs/x") == "runs/x"
    r = load_recipe(R1 / "sft.toml", "sft", {"sft.lr": 1, "lora.modules_to_save": ["lm_head"]})
    assert r.train.lr == 1.0 and isinstance(r.train.lr, float) and r.lora.modules_to_save == ["lm_head"]


def test_cli_ablation_flags_map_to_overrides():
    from mmrbench.commands.train import overrides_from_args

    def ns(stage, **kw):
        base = dict(stage=stage, set=[], data=None, model=None, device=None, dtype=None, answer_only=False,
                    no_reference=False, domain_knowledge=False, init_adapter=None, no_cold_start=False,
                    no_contrastive=False, negatives_model=None)
        base.update(kw)
        return argparse.Namespace(**base)

    ov = overrides_from_args(ns("grpo", no_reference=True, no_contrastive=True, no_cold_start=True,
                                answer_only=True, set=["grpo.lr=1e-5"]))
    assert ov == {"grpo.lr": 1e-5, "data.prompt_variant": "no_reference", "data.answer_only": True,
                  "grpo.init_adapter": "", "grpo.contrastive": False}
    with pytest.raises(ConfigError):
        overrides_from_args(ns("sft", no_reference=True, domain_knowledge=True))
    with pytest.raises(ConfigError):
        overrides_from_args(ns("grpo", init_adapter="x", no_cold_start=True))
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        overrides_from_args(ns("sft", set=["oops"]))
