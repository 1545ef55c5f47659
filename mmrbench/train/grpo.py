"""GRPO with contrastive sampling: an own loop on transformers + peft.

One *step* = one rollout of ``prompt_batch`` prompts (global, shared out over ranks) x
``group_size`` responses, followed by ``prompt_batch / mini_batch`` optimizer updates on
mini-batches of ``mini_batch`` prompts. Per group:

1. generate G responses (G-1 plus the verified positive with contrastive sampling);
2. reward every response (:func:`mmrbench.train.rewards.anomaly_reward`, or the graded variant that
   ``box_reward`` names); when all are positive,
   swap ``n_negatives`` policy responses for opposite-hint negatives (:mod:`.contrastive`);
3. group-normalised advantages, shared by all tokens of a response;
4. snapshot the old-policy log-probs (before any update of this rollout) and, when ``beta > 0``,
   the reference log-probs with the LoRA adapter disabled.

The loss is the token-mean over the mini-batch of the PPO-clipped surrogate plus ``beta`` x k3 KL
(:mod:`.grpo_math`). Dropout is switched off (LoRA dropout included) so that the ratio of the
first update is exactly 1 and old/new log-probs differ only through the updates.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmrbench.train import checkpoint as ck
from mmrbench.train.collate import prompt_inputs
from mmrbench.train.common import check_resume, load_builder, write_run_info
from mmrbench.train.contrastive import NegativeSource, all_positive
from mmrbench.train.data import Example, ExampleBuilder
from mmrbench.train.distributed import Dist, all_reduce_grads, all_reduce_sum, barrier, broadcast_params, shard
from mmrbench.train.grpo_math import group_advantages, grpo_loss
from mmrbench.train.policy import Policy, load_policy, make_optimizer
from mmrbench.train.recipe import Recipe
from mmrbench.train.rewards import BOX_REWARDS, accuracy_reward
from mmrbench.train.rollout import completion_log_probs, generate, pad_completions, text_to_completion
from mmrbench.train.sft import batch_order

log = logging.getLogger(__name__)


@dataclass
class Group:
    example: Example
    prompt: dict
    completions: list[list[int]]
    sources: list[str]
    texts: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        return int(self.mask.sum()) if self.mask is not None else 0


def disable_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


class GRPOTrainer:
    def __init__(self, recipe: Recipe, out_dir: str | Path, *, dist: Dist | None = None,
                 policy: Policy | None = None, negatives_api: Any | None = None, progress: bool = True):
        self.recipe = recipe
        self.cfg = recipe.train
        self.out = Path(out_dir)
        self.dist = dist or Dist()
        self.progress = progress
        torch.manual_seed(self.cfg.seed)  # same fresh-LoRA initialisation on every rank
        self.policy = policy or load_policy(recipe.model, recipe.lora, init_adapter=self.cfg.init_adapter,
                                            local_rank=self.dist.local_rank)
        broadcast_params(self.policy.trainable_parameters(), self.dist)
        torch.manual_seed(self.cfg.seed * 1000 + self.dist.rank + 1)  # rollouts differ per rank
        disable_dropout(self.policy.model)
        self.builder: ExampleBuilder = load_builder(recipe, self.policy.processor)
        if negatives_api is None and self.cfg.contrastive and self.cfg.negatives_model:
            from mmrbench.cards import create_model, parse_spec

            # a spec or a card, through the same checks as `mmrbench eval` (options, keys, conventions)
            negatives_api = create_model(parse_spec(self.cfg.negatives_model))
        self.negatives = NegativeSource(self.policy, self.builder, max_new_tokens=self.cfg.max_new_tokens,
                                        temperature=self.cfg.temperature, top_p=self.cfg.top_p, api=negatives_api)
        n = len(self.builder)
        self.total_steps = self.cfg.max_steps or max(1, math.ceil(self.cfg.epochs * n / self.cfg.prompt_batch))
        self.updates_per_step = self.cfg.prompt_batch // self.cfg.mini_batch
        self.opt, self.sched = make_optimizer(self.policy, self.cfg.lr, self.cfg.weight_decay, self.cfg.lr_scheduler,
                                              self.total_steps * self.updates_per_step, self.cfg.warmup_ratio)
        self.logger = ck.JsonlLog(self.out / "grpo_log.jsonl", enabled=self.dist.is_main)

    # -- rollouts -------------------------------------------------------------------------------
    def score(self, group: Group) -> None:
        tok = self.policy.tokenizer
        group.texts = [tok.decode(c, skip_special_tokens=True) for c in group.completions]
        cols = group.example.reward_columns()
        kw = {k: [v] * len(group.texts) for k, v in cols.items()}
        group.rewards = BOX_REWARDS[self.cfg.box_reward](None, group.texts, **kw)
        group.accuracy = accuracy_reward(None, group.texts, **kw)

    def make_group(self, example: Example, completions: list[list[int]], sources: list[str],
                   prompt: dict | None = None, *, need_old: bool = True) -> Group:
        """Score a group of completions and snapshot old/reference log-probs (no gradient)."""
        prompt = prompt if prompt is not None else prompt_inputs(self.policy.processor, example.messages)
        g = Group(example=example, prompt=prompt, completions=[list(c) for c in completions], sources=list(sources))
        self.score(g)
        self.finish(g, need_old=need_old)
        return g

    def finish(self, g: Group, *, need_old: bool = True) -> None:
        g.advantages = group_advantages(torch.tensor(g.rewards), len(g.rewards))
        g.ids, g.mask = pad_completions(g.completions, self.policy.pad_id())
        with torch.no_grad():
            if need_old:
                g.old_logp = completion_log_probs(self.policy, g.prompt, g.ids, g.mask, self.cfg.temperature).cpu()
            if self.cfg.beta:
                with self.policy.model.disable_adapter():
                    g.ref_logp = completion_log_probs(self.policy, g.prompt, g.ids, g.mask, self.cfg.temperature).cpu()

    def rollout_group(self, example: Example, *, need_old: bool = True) -> Group | None:
        cfg = self.cfg
        prompt = prompt_inputs(self.policy.processor, example.messages)
        if prompt["input_ids"].shape[1] > cfg.max_prompt_tokens:
            log.warning("skipping %s: prompt of %d tokens exceeds max_prompt_tokens %d", example.sample.id,
                        prompt["input_ids"].shape[1], cfg.max_prompt_tokens)
            return None
        n_gen = cfg.group_size - 1 if cfg.contrastive else cfg.group_size
        comps = generate(self.policy, prompt, n_gen, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.temperature, top_p=cfg.top_p)
        sources = ["policy"] * n_gen
        if cfg.contrastive:
            comps.append(text_to_completion(self.policy, example.target, cfg.max_new_tokens))
            sources.append("positive")
        g = Group(example=example, prompt=prompt, completions=comps, sources=sources)
        self.score(g)
        if cfg.contrastive and cfg.n_negatives and all_positive(g.accuracy):
            negs, src = self.negatives(example, cfg.n_negatives)
            for i, c in enumerate(negs[: cfg.n_negatives]):
                g.completions[i] = c
                g.sources[i] = f"negative:{src}"
            self.score(g)
        self.finish(g, need_old=need_old)
        return g

    # -- updates --------------------------------------------------------------------------------
    def update(self, groups: list[Group]) -> dict[str, float]:
        """One optimizer update on this rank's groups of a mini-batch (gradients summed over ranks)."""
        d = self.dist
        local_tokens = sum(g.tokens for g in groups)
        total = all_reduce_sum(local_tokens, d, self.policy.device)
        self.policy.model.train()
        self.opt.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "kl": 0.0, "clipped": 0.0}
        for g in groups:
            assert g.ids is not None and g.mask is not None and g.advantages is not None  # set by finish()
            logp = completion_log_probs(self.policy, g.prompt, g.ids, g.mask, self.cfg.temperature)
            dev = logp.device
            old = g.old_logp.to(dev) if g.old_logp is not None else logp.detach()
            ref = g.ref_logp.to(dev) if g.ref_logp is not None else None
            parts = grpo_loss(logp, old, ref, g.advantages.to(dev), g.mask.to(dev), clip_eps=self.cfg.clip_eps,
                              beta=self.cfg.beta, normaliser=max(total, 1.0),
                              kl_estimator=self.cfg.kl_estimator)
            parts.loss.backward()
            sums["loss"] += float(parts.loss.detach())
            sums["kl"] += parts.kl_sum
            sums["clipped"] += parts.clipped_tokens
        all_reduce_grads(self.policy.trainable_parameters(), d)
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.policy.trainable_parameters(), self.cfg.max_grad_norm)
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        out = {k: all_reduce_sum(v, d, self.policy.device) for k, v in sums.items()}
        return {"loss": out["loss"], "kl_sum": out["kl"], "clipped": out["clipped"], "tokens": total, "lr": lr}

    def minibatches(self, step: int) -> list[list[int]]:
        """This rank's sample indices per mini-batch of the step's global prompt batch."""
        idx = batch_order(len(self.builder), self.cfg.prompt_batch, step, self.cfg.seed)
        mb = self.cfg.mini_batch
        return [shard(idx[k:k + mb], self.dist) for k in range(0, len(idx), mb)]

    def step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        d = self.dist
        mbs = self.minibatches(step)
        need_old = len(mbs) > 1  # with one update per rollout, old log-probs == the update's own (detached)
        groups_per_mb = []
        for ids in mbs:
            gs = [self.rollout_group(self.builder.example(i), need_old=need_old) for i in ids]
            groups_per_mb.append([g for g in gs if g is not None])
        t1 = time.perf_counter()
        upd = [self.update(gs) for gs in groups_per_mb]
        t2 = time.perf_counter()
        allg = [g for gs in groups_per_mb for g in gs]
        pol = [(g, i) for g in allg for i, s in enumerate(g.sources) if s == "policy"]
        z = all_reduce_sum
        dev = self.policy.device
        n_groups = z(len(allg), d, dev)
        n_rows = z(sum(len(g.rewards) for g in allg), d, dev)
        n_pol = z(len(pol), d, dev)
        tokens = sum(u["tokens"] for u in upd)
        rec = {
            "step": step + 1,
            "reward": z(sum(sum(g.rewards) for g in allg), d, dev) / max(n_rows, 1),
            "reward_policy": z(sum(g.rewards[i] for g, i in pol), d, dev) / max(n_pol, 1),
            "accuracy": z(sum(g.accuracy[i] for g, i in pol), d, dev) / max(n_pol, 1),
            "kl": sum(u["kl_sum"] for u in upd) / max(tokens, 1),
            "clip_frac": sum(u["clipped"] for u in upd) / max(tokens, 1),
            "zero_adv_frac": z(sum(1 for g in allg if max(g.rewards) == min(g.rewards)), d, dev) / max(n_groups, 1),
            "response_len": z(sum(len(g.completions[i]) for g, i in pol), d, dev) / max(n_pol, 1),
            "negatives_groups": z(sum(1 for g in allg if any(s.startswith("negative") for s in g.sources)), d, dev),
            "skipped": z(sum(len(ids) for ids in mbs) - len(allg), d, dev),
            "loss": sum(u["loss"] for u in upd) / max(len(upd), 1),
            "lr": upd[0]["lr"] if upd else None,
            "rollout_s": round(t1 - t0, 4), "update_s": round(t2 - t1, 4), "time_s": round(t2 - t0, 4),
        }
        return rec

    def train(self, resume: bool = True) -> dict[str, Any]:
        start = 0
        last = ck.latest_checkpoint(self.out) if resume else None
        if last is not None:
            state = ck.load_checkpoint(last, self.policy.model, self.opt, self.sched)
            start = int(state["step"])
            self.logger.truncate_after(start)
            log.info("resumed GRPO from %s (step %d of %d)", last, start, self.total_steps)
        if self.dist.is_main:
            write_run_info(self.out, self.recipe, {"train_samples": len(self.builder), "total_steps": self.total_steps,
                                                   "world_size": self.dist.world_size})
        from tqdm import tqdm

        bar = tqdm(range(start, self.total_steps), desc="grpo", initial=start, total=self.total_steps,
                   disable=not (self.progress and self.dist.is_main))
        rec: dict[str, Any] = {}
        for step in bar:
            rec = self.step(step)
            self.logger.write(rec)
            bar.set_postfix(reward=f"{rec['reward_policy']:.3f}", acc=f"{rec['accuracy']:.2f}")
            done = step + 1
            if self.dist.is_main and ((self.cfg.save_steps and done % self.cfg.save_steps == 0) or done == self.total_steps):
                ck.save_checkpoint(self.out, done, self.policy.model, self.opt, self.sched,
                                   {"kind": "grpo", "total_steps": self.total_steps})
            barrier(self.dist)
        if self.dist.is_main:
            ck.save_adapter(self.policy.model, self.out)
        barrier(self.dist)
        return rec


def run_grpo(recipe: Recipe, out_dir: str | Path, *, dist: Dist | None = None, resume: bool = True,
             progress: bool = True, negatives_api: Any | None = None) -> GRPOTrainer:
    if resume and ck.latest_checkpoint(out_dir) is not None:  # before the models load: fail fast
        check_resume(Path(out_dir), recipe)
    trainer = GRPOTrainer(recipe, out_dir, dist=dist, negatives_api=negatives_api, progress=progress)
    trainer.train(resume=resume)
    return trainer
