"""SFT cold start: LoRA on the assistant's think-then-answer text, paper hyper-parameters by default.

One optimizer step = one global batch of ``batch_size`` examples (shuffled per epoch with a seeded
generator, so a resumed run sees exactly the batches it would have seen). Each rank takes a strided
share, runs it in micro-batches, and the loss is the sum of token cross-entropies divided by the
batch's global label-token count (token-mean): the summed gradient over micro-batches and ranks is
the whole batch's gradient.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mmrbench.train import checkpoint as ck
from mmrbench.train.collate import IGNORE_INDEX, sft_batch
from mmrbench.train.common import check_resume, load_builder, write_run_info
from mmrbench.train.distributed import Dist, all_reduce_grads, all_reduce_sum, barrier, broadcast_params, shard
from mmrbench.train.policy import Policy, load_policy, make_optimizer, to_device
from mmrbench.train.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class SFTResult:
    out_dir: Path
    steps: int
    last_loss: float
    policy: Policy


def sft_loss_sum(policy: Policy, batch: dict, aux: Callable[[Any], Any] | None = None,
                 attentions: bool = False) -> tuple[torch.Tensor, int, Any]:
    """Summed cross-entropy over label tokens and their count (no averaging: the caller normalises),
    and ``aux(outputs)`` when given: extra loss terms read from the model's outputs, hidden states
    included (the per-token defect and position losses), attention weights with ``attentions``."""
    labels = batch.pop("labels")
    out = policy.model(**batch, use_cache=False, output_hidden_states=aux is not None,
                       **({"output_attentions": True} if attentions else {}))
    logits = out.logits[:, :-1, :].float()
    tgt = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((tgt != IGNORE_INDEX).sum()), aux(out) if aux is not None else None


def batch_order(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the global batch for ``step`` (epoch-wise seeded shuffles, last batch may be short)."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return perm[k * batch_size:(k + 1) * batch_size]


def train_step(policy: Policy, examples: list, dist: Dist, micro: int, max_length: int | None,
               token_weight: float = 0.0, token_layer: int = 0,
               position_weight: float = 0.0, attention_weight: float = 0.0,
               attention_layer: int = 0) -> tuple[float, int, dict[str, float]]:
    """Forward/backward of this rank's share; gradients summed over ranks. Returns (loss, tokens,
    auxiliary losses by name): ``token_weight`` > 0 adds that times the per-token defect loss,
    ``position_weight`` > 0 that times the position loss, ``attention_weight`` > 0 that times the
    attention loss of decoder layer ``attention_layer`` (:mod:`mmrbench.train.token_loss`), each
    averaged over this rank's micro-batches."""
    local_tokens = 0
    batches = []
    for i in range(0, len(examples), micro):
        b = sft_batch(policy.processor, examples[i:i + micro], max_length)
        local_tokens += int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
        batches.append((examples[i:i + micro], b))
    total_tokens = all_reduce_sum(local_tokens, dist, policy.device)
    weights = {name: w for name, w in (("token_loss", token_weight), ("position_loss", position_weight),
                                       ("attention_loss", attention_weight)) if w > 0}
    aux_of = _aux_loss_factory(policy, token_layer, list(weights), attention_layer) if weights else None
    loss_sum = 0.0
    aux_sums = dict.fromkeys(weights, 0.0)
    for chunk, b in batches:
        aux = aux_of(chunk, b) if aux_of is not None else None
        loss, _, aux_losses = sft_loss_sum(policy, to_device(dict(b), policy.device, policy.dtype), aux,
                                           attentions="attention_loss" in weights)
        total = loss / max(total_tokens, 1.0)
        for name, value in (aux_losses or {}).items():
            total = total + weights[name] * value / len(batches)
            aux_sums[name] += float(value.detach()) / len(batches)
        total.backward()
        loss_sum += float(loss.detach())
    all_reduce_grads(policy.trainable_parameters(), dist)
    return all_reduce_sum(loss_sum, dist, policy.device) / max(total_tokens, 1.0), int(total_tokens), aux_sums


def _aux_loss_factory(policy: Policy, layer: int, names: list[str],
                      attention_layer: int = 0) -> Callable[[list, dict], Callable[[Any], dict]]:
    """For a micro-batch (its examples and processor batch), the ``aux`` of :func:`sft_loss_sum` that
    computes the named auxiliary losses; what does not depend on the batch is looked up once."""
    from mmrbench.errors import ConfigError
    from mmrbench.train.token_loss import answer_looks, look_loss, position_loss, query_tokens, token_loss, yes_no_ids

    yes_no = yes_no_ids(policy.tokenizer) if "token_loss" in names else (0, 0)
    image_token_id = int(policy.model.config.image_token_id)
    merge = int(getattr(getattr(policy.processor, "image_processor", None), "merge_size", 2) or 2)

    def for_batch(chunk: list, b: dict) -> Callable[[Any], dict]:
        queries = query_tokens(b["input_ids"], b["image_grid_thw"], chunk, image_token_id, merge)
        looks = answer_looks(b["input_ids"], b["labels"], policy.tokenizer, queries) if "attention_loss" in names else []

        def aux(out) -> dict:
            losses = {}
            if "token_loss" in names:
                losses["token_loss"] = token_loss(policy.model, out.hidden_states, layer, queries, yes_no)
            if "position_loss" in names:
                losses["position_loss"] = position_loss(policy.model, out.hidden_states, layer, queries)
            if "attention_loss" in names:
                n_layers = len(out.attentions or ())
                if not out.attentions or any(a is None for a in out.attentions):
                    raise ConfigError("sft.attention_loss_weight needs attention weights: the model returned none "
                                      "(only eager attention returns them)")
                if not 0 <= attention_layer <= n_layers:
                    raise ConfigError(f"sft.attention_loss_layer={attention_layer}: the model has {n_layers} decoder layers")
                losses["attention_loss"] = look_loss(out.attentions[(attention_layer or n_layers) - 1][:, 0], looks)
            return losses

        return aux

    return for_batch


def run_sft(recipe: Recipe, out_dir: str | Path, *, dist: Dist | None = None, resume: bool = True,
            progress: bool = True) -> SFTResult:
    dist = dist or Dist()
    cfg = recipe.train
    out = Path(out_dir)
    if resume and ck.latest_checkpoint(out) is not None:  # before the model loads: fail fast
        check_resume(out, recipe)
    torch.manual_seed(cfg.seed)  # same LoRA initialisation on every rank ...
    policy = load_policy(recipe.model, recipe.lora, local_rank=dist.local_rank)
    broadcast_params(policy.trainable_parameters(), dist)  # ... and made certain
    torch.manual_seed(cfg.seed * 1000 + dist.rank + 1)  # dropout differs per rank
    builder = load_builder(recipe, policy.processor)
    n = len(builder)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    opt, sched = make_optimizer(policy, cfg.lr, cfg.weight_decay, cfg.lr_scheduler, total, cfg.warmup_ratio)
    logger = ck.JsonlLog(out / "sft_log.jsonl", enabled=dist.is_main)
    start = 0
    last = ck.latest_checkpoint(out) if resume else None
    if last is not None:
        state = ck.load_checkpoint(last, policy.model, opt, sched)
        start = int(state["step"])
        logger.truncate_after(start)
        log.info("resumed SFT from %s (step %d of %d)", last, start, total)
    if dist.is_main:
        write_run_info(out, recipe, {"train_samples": n, "total_steps": total, "world_size": dist.world_size})
    if cfg.attention_loss_weight > 0:  # attention weights: only transformers' eager attention returns them
        policy.model.set_attn_implementation("eager")
    policy.model.train()
    micro = cfg.micro_batch_size or max(1, math.ceil(cfg.batch_size / dist.world_size))
    from tqdm import tqdm

    bar = tqdm(range(start, total), desc="sft", disable=not (progress and dist.is_main), initial=start, total=total)
    loss = float("nan")
    for step in bar:
        t0 = time.perf_counter()
        idx = shard(batch_order(n, cfg.batch_size, step, cfg.seed), dist)
        examples = [builder.example(i) for i in idx]
        opt.zero_grad(set_to_none=True)
        loss, tokens, aux_losses = train_step(policy, examples, dist, micro, cfg.max_length,
                                              cfg.token_loss_weight, cfg.token_loss_layer, cfg.position_loss_weight,
                                              cfg.attention_loss_weight, cfg.attention_loss_layer)
        gn = torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), cfg.max_grad_norm) if cfg.max_grad_norm else None
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        rec = {"step": step + 1, "epoch": (step + 1) / per_epoch, "loss": loss, "lr": lr, "tokens": tokens,
               "grad_norm": float(gn) if gn is not None else None, "time_s": round(time.perf_counter() - t0, 4)}
        rec.update(aux_losses)
        logger.write(rec)
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if dist.is_main and ((cfg.save_steps and done % cfg.save_steps == 0) or done == total):
            ck.save_checkpoint(out, done, policy.model, opt, sched, {"kind": "sft", "total_steps": total})
        barrier(dist)
    if dist.is_main:
        ck.save_adapter(policy.model, out)
    barrier(dist)
    return SFTResult(out_dir=out, steps=total, last_loss=loss, policy=policy)
