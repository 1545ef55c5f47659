"""TRL's GRPOTrainer set up for the same objective as our loop (mmrbench.train.trl_compare).

The config mapping is checked without TRL; the trainer itself (reference model, dropout, padding,
a run on prompts of different lengths) only where ``trl`` is installed (optional, not in CI's extras).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mmrbench.train.recipe import load_recipe


def grpo_recipe(**ov):
    base = {"grpo.prompt_batch": 4, "grpo.mini_batch": 2, "grpo.group_size": 2, "grpo.contrastive": False,
            "grpo.max_new_tokens": 8, "grpo.max_steps": 3, "grpo.lr_scheduler": "constant",
            "grpo.warmup_ratio": 0.0, "model.device": "cpu"}
    base.update(ov)
    return load_recipe(None, "grpo", base)


def test_config_is_our_objective():
    from mmrbench.train.trl_compare import trl_config_kwargs

    kw = trl_config_kwargs(grpo_recipe(), "/tmp/x")
    assert kw["loss_type"] == "bnpo" and kw["scale_rewards"] == "group"
    assert kw["use_bias_correction_kl"] is False and kw["disable_dropout"] is True
    assert kw["beta"] == 0.001 and kw["epsilon"] == 0.2 and kw["num_generations"] == 2
    # 4 prompts per rollout in mini-batches of 2: two updates per generation, 3 rollouts = 6 TRL steps
    assert kw["steps_per_generation"] == 2 and kw["per_device_train_batch_size"] == 4 and kw["max_steps"] == 6
    assert trl_config_kwargs(grpo_recipe(**{"grpo.kl_estimator": "k3_ratio"}), "/x")["use_bias_correction_kl"] is True


@pytest.mark.slow
def test_trl_trainer_same_reference_dropout_and_padding(tmp_path, monkeypatch):
    """Reference = adapter disabled (so the first update already sees KL > 0 from a trained SFT
    adapter; with TRL's default "ref" copy of the adapter it is exactly 0), dropout off, left padding,
    and a run over prompts of two different lengths completes."""
    pytest.importorskip("trl")
    torch = pytest.importorskip("torch")
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from train_toydata import write_toy_manifest

    from mmrbench.data.manifest import read_manifest, write_manifest
    from mmrbench.testing.tiny_qwen import tiny_qwen25vl_dir
    from mmrbench.train import trl_compare
    from mmrbench.train.sft import run_sft

    torch.set_num_threads(1)
    tiny = tiny_qwen25vl_dir(tmp_path / "cache")
    man = write_toy_manifest(tmp_path / "toy", n=4)
    m = read_manifest(man)
    for s in m.samples[2:]:
        s.category = "very_long_metal_plate_category"  # a longer prompt text
    write_manifest(man, m.samples)
    run_sft(load_recipe(None, "sft", {"model.base": str(tiny), "data.manifest": str(man), "sft.max_steps": 2,
                                      "sft.batch_size": 2, "sft.lr": 1e-2, "lora.modules_to_save": ["lm_head"]}),
            tmp_path / "sft", progress=False)
    rec = grpo_recipe(**{"model.base": str(tiny), "data.manifest": str(man), "grpo.init_adapter": str(tmp_path / "sft"),
                         "grpo.max_steps": 1, "lora.dropout": 0.3})

    def kl_first_update(trainer) -> float:
        trainer.train()
        return [h["kl"] for h in trainer.state.log_history if "kl" in h][0]

    tr = trl_compare.build_trl_trainer(rec, tmp_path / "trl")
    assert "ref" not in tr.model.peft_config and tr.processing_class.tokenizer.padding_side == "left"
    assert all(mod.p == 0.0 for mod in tr.model.modules() if isinstance(mod, torch.nn.Dropout))
    lengths = {len(r["prompt"][1]["content"][-1]["text"]) for r in tr.train_dataset}
    assert len(lengths) == 2
    assert kl_first_update(tr) > 1e-4

    # TRL's own default (a frozen copy of the SFT adapter as reference) gives exactly 0 there
    monkeypatch.setattr(trl_compare, "use_base_model_as_reference", lambda trainer: None)
    tr2 = trl_compare.build_trl_trainer(rec, tmp_path / "trl2")
    assert "ref" in tr2.model.peft_config
    assert kl_first_update(tr2) == 0.0
