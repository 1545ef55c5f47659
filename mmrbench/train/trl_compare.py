"""TRL's ``GRPOTrainer`` set up to optimise *our* GRPO objective, for comparisons (optional: needs ``trl``).

Our loop (:mod:`mmrbench.train.grpo`) and TRL 1.16 differ in defaults that change the loss, not only
the speed. Same objective means, from our recipe:

* ``loss_type="bnpo"``: token-mean over the whole local batch (our ``token_mean`` with the
  mini-batch's token count). ``"dapo"`` (TRL's default) divides by the token count of the whole
  *generation* batch across gradient-accumulation steps, a different scale per update;
* ``scale_rewards="group"``: ``(r - mean) / (std + 1e-4)`` within the group, as ours;
* ``use_bias_correction_kl``: False for ``grpo.kl_estimator = "k3"`` (ours and the paper's), True
  for ``"k3_ratio"``;
* ``disable_dropout=True``: ours switches dropout off (LoRA dropout included) so ratios start at 1;
* reference = the model with the adapter *disabled* (the base model). Given a ``PeftModel`` with a
  trained adapter, TRL copies that adapter into a frozen "ref" adapter and uses *it* as reference
  (the SFT adapter); we delete that copy so TRL falls back to disabling adapters;
* left padding of prompts (TRL batches prompts of different lengths; the processor must pad on the
  left, where the generated tokens do not go).

Everything else (G, prompts per rollout, updates per rollout, clip, beta, lr, temperature, top-p,
max completion length) is copied from the recipe by :func:`trl_config_kwargs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrbench.errors import ConfigError, require
from mmrbench.train.recipe import Recipe


def trl_config_kwargs(recipe: Recipe, output_dir: str | Path, *, max_steps: int | None = None) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments for the objective and schedule of a GRPO ``recipe``.

    TRL counts one optimizer update as a step; ``steps_per_generation`` = updates per rollout makes
    one generation feed that many updates, as ours does, so one of our rollout steps = that many TRL
    steps (``max_steps`` defaults to the recipe's rollouts x updates).
    """
    g = recipe.train
    updates = g.prompt_batch // g.mini_batch
    steps = max_steps if max_steps is not None else max(1, g.max_steps) * updates
    return dict(
        output_dir=str(output_dir), per_device_train_batch_size=g.mini_batch * g.group_size,
        gradient_accumulation_steps=1, steps_per_generation=updates, num_iterations=1,
        num_generations=g.group_size, max_completion_length=g.max_new_tokens,
        learning_rate=g.lr, lr_scheduler_type="constant" if g.lr_scheduler == "constant" else g.lr_scheduler,
        warmup_steps=round(g.warmup_ratio * steps), weight_decay=g.weight_decay, max_grad_norm=g.max_grad_norm,
        beta=g.beta, epsilon=g.clip_eps, temperature=g.temperature, top_p=g.top_p, top_k=0,
        loss_type="bnpo", scale_rewards="group", use_bias_correction_kl=g.kl_estimator == "k3_ratio",
        disable_dropout=True, importance_sampling_level="token", mask_truncated_completions=False,
        max_steps=steps, logging_steps=1, report_to=[], save_strategy="no", bf16=False,
        use_cpu=recipe.model.device == "cpu", dataloader_num_workers=0, seed=g.seed,
    )


def trl_rows(recipe: Recipe, samples, manifest, variant: str) -> list[dict[str, Any]]:
    """TRL dataset rows (conversational prompt with images + the reward columns) for ``samples``."""
    from mmrbench.data.images import load_rgb
    from mmrbench.prompts import build_prompt

    rows = []
    for s in samples:
        p = build_prompt(s, variant)
        rows.append({"prompt": [{"role": "system", "content": [{"type": "text", "text": p.system}]},
                                {"role": "user", "content": [{"type": "image"} for _ in p.images]
                                 + [{"type": "text", "text": p.user}]}],
                     "images": [load_rgb(manifest.resolve(x)) for x in p.images], "label": s.label,
                     "gt_boxes": [list(b.xyxy) for b in s.boxes], "image_size": [s.width, s.height],
                     "sent_size": None, "convention": recipe.model.convention})
    return rows


def build_trl_trainer(recipe: Recipe, output_dir: str | Path, *, samples=None, max_steps: int | None = None):
    """A TRL ``GRPOTrainer`` on the recipe's base model + ``grpo.init_adapter``, same objective as ours.

    Returns the trainer; ``trainer.train()`` runs it. ``samples`` defaults to the recipe's manifest split.
    """
    require("trl", "trl")
    import datasets
    import peft
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    from mmrbench.adapters.hf_inputs import load_processor
    from mmrbench.data.manifest import read_manifest
    from mmrbench.train.rewards import BOX_REWARDS

    m = read_manifest(recipe.data.manifest)
    if samples is None:
        samples = [s for s in m.samples if s.split == recipe.data.split]
    ds = datasets.Dataset.from_list(trl_rows(recipe, samples, m, recipe.data.prompt_variant))
    base = transformers.AutoModelForImageTextToText.from_pretrained(recipe.model.base, dtype="float32")
    init = recipe.train.init_adapter
    if not init:
        raise ConfigError("grpo.init_adapter: the TRL comparison starts from a trained adapter (none given)")
    model = peft.PeftModel.from_pretrained(base, init, is_trainable=True)
    proc = load_processor(recipe.model.base)
    proc.tokenizer.padding_side = "left"
    cfg = GRPOConfig(**trl_config_kwargs(recipe, output_dir, max_steps=max_steps))
    # TRL annotates reward functions as returning list[float | None]; list is invariant, so mypy rejects a
    # function returning list[float] although TRL accepts it (a reward of None only means "not applicable")
    trainer = GRPOTrainer(model=model, reward_funcs=[BOX_REWARDS[recipe.train.box_reward]], args=cfg,  # type: ignore[list-item]
                          train_dataset=ds,
                          processing_class=proc)
    use_base_model_as_reference(trainer)
    return trainer


def use_base_model_as_reference(trainer) -> None:
    """Drop the frozen copy of the starting adapter that TRL made the reference, so that TRL computes
    reference log-probs with adapters disabled (the base model), as our loop does."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")
    assert "ref" not in getattr(model, "peft_config", {})
