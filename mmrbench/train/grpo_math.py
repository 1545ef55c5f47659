"""The GRPO objective as pure tensor functions, each small enough to check by hand.

Conventions (all tensors on one device):

* ``rewards`` are laid out group-major: ``[g0r0, g0r1, ..., g0r(G-1), g1r0, ...]``.
* ``logp``, ``old_logp``, ``ref_logp`` and ``mask`` are ``(rows, tokens)`` over completion tokens
  only; ``mask`` is 1 on real completion tokens, 0 on padding.
* Losses are *sums* over tokens divided by an explicit ``normaliser`` (the token count of the whole
  mini-batch, across ranks when data-parallel). That is "token-mean" aggregation (every token of a
  mini-batch weighs the same, whatever response it belongs to), and it is what makes a mini-batch
  split into micro-batches, or across ranks, give exactly the gradient of the whole mini-batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: std floor of the group normalisation; an all-equal group gets advantage exactly 0 (0 / eps)
ADV_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = ADV_EPS) -> torch.Tensor:
    """``(r - mean) / (std + eps)`` within each group of ``group_size`` consecutive rewards.

    ``std`` is the sample standard deviation (Bessel-corrected, like ``torch.std`` and TRL), so a
    group of two rewards 0 and 1 gets advantages -0.7071 and +0.7071. All tokens of a response share
    its advantage (the caller broadcasts). A group whose rewards are all equal carries no signal
    and gets exactly 0.
    """
    r = rewards.reshape(-1, group_size).to(torch.float32)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    adv = (r - mean) / (std + eps)
    return adv.reshape(-1)


def zero_advantage_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Boolean per group: all rewards equal (the group contributes no policy gradient)."""
    r = rewards.reshape(-1, group_size)
    return (r.max(dim=1).values - r.min(dim=1).values) == 0


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each of ``tokens`` under ``logits`` (same leading shape, logits already
    aligned so ``logits[..., t, :]`` predicts ``tokens[..., t]``).

    ``logsumexp`` per row rather than a full ``log_softmax`` keeps peak memory at one vocab-sized
    row copy instead of two (the vocab of a real VLM is 150k). Logits are divided by the sampling
    temperature so the ratio is taken under the distribution that generated the rollouts.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference): ``exp(d) - d - 1`` with ``d = ref - logp``.

    Non-negative, zero when the two agree, unbiased in expectation under the policy's samples.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


#: KL estimators of :func:`grpo_loss` (``grpo.kl_estimator``)
KL_ESTIMATORS = ("k3", "k3_ratio")


def kl_term(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor,
            estimator: str = "k3") -> torch.Tensor:
    """Per-token KL penalty whose gradient the loss follows.

    * ``k3``: :func:`k3_kl` as it is (GRPO, DeepSeekMath; TRL with ``use_bias_correction_kl=False``).
      Its value estimates KL(policy || reference) without bias, but its *gradient* does not: on-policy
      it is ``1 - exp(ref - logp)`` per token, a biased estimate of the reverse-KL gradient.
    * ``k3_ratio``: ``k3 * exp(logp - old_logp)``, k3 weighted by the (differentiable) importance ratio
      (DeepSeek-V3.2; TRL's default ``use_bias_correction_kl=True``). The value is the same on-policy
      (ratio 1), but the gradient becomes ``k3 + 1 - exp(ref - logp) = logp - ref`` per token: the
      gradient of ``E[log(policy / reference)]``, unbiased.
    """
    kl = k3_kl(logp, ref_logp)
    if estimator == "k3":
        return kl
    if estimator == "k3_ratio":
        return kl * torch.exp(logp - old_logp)
    raise ValueError(f"unknown KL estimator {estimator!r} (known: {', '.join(KL_ESTIMATORS)})")


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clipped surrogate *loss* ``-min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)``.

    ``advantages`` is per row (broadcast over tokens). Returns the loss and a boolean tensor marking
    tokens where clipping was active (the clipped term was the smaller one), for the clip fraction.
    """
    adv = advantages.reshape(-1, 1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -torch.minimum(unclipped, clipped)
    is_clipped = clipped < unclipped
    return loss, is_clipped


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def token_mean(x: torch.Tensor, mask: torch.Tensor, normaliser: float | torch.Tensor | None = None) -> torch.Tensor:
    """Sum of ``x`` over masked tokens divided by ``normaliser`` (default: the masked token count)."""
    n = mask.sum() if normaliser is None else normaliser
    return masked_sum(x, mask) / torch.clamp(torch.as_tensor(n, dtype=x.dtype, device=x.device), min=1.0)


@dataclass
class LossParts:
    loss: torch.Tensor          # what backward() is called on (already divided by the normaliser)
    policy_sum: float           # masked sums, for logging after the normaliser is known
    kl_sum: float
    clipped_tokens: float
    tokens: float


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, clip_eps: float = 0.2, beta: float = 0.001,
              normaliser: float | torch.Tensor | None = None, kl_estimator: str = "k3") -> LossParts:
    """GRPO loss of one micro-batch: token-mean of clipped surrogate + ``beta`` * KL term
    (:func:`kl_term`; ``kl_estimator`` "k3" or "k3_ratio").

    ``normaliser`` is the token count of the whole mini-batch (all micro-batches, all ranks); with it,
    summing the gradients of the micro-batches reproduces the gradient of the mini-batch exactly.
    """
    mask = mask.to(logp.dtype)
    pg, is_clipped = clipped_surrogate(logp, old_logp, advantages, clip_eps)
    per_token = pg
    kl_sum = 0.0
    if ref_logp is not None and beta != 0.0:
        kl = kl_term(logp, old_logp, ref_logp, kl_estimator)
        per_token = per_token + beta * kl
        kl_sum = float(masked_sum(kl.detach(), mask))
    loss = token_mean(per_token, mask, normaliser)
    return LossParts(loss=loss, policy_sum=float(masked_sum(pg.detach(), mask)), kl_sum=kl_sum,
                     clipped_tokens=float(masked_sum(is_clipped.to(mask.dtype), mask)),
                     tokens=float(mask.sum()))
