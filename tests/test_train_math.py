"""Hand-computed checks of the GRPO objective pieces."""
import math

import pytest
import torch

from mmrbench.train import grpo_math as gm


def test_group_advantages_hand_computed():
    # group 1: rewards 0, 1 -> mean 0.5, sample std sqrt(0.5) = 0.70711
    # group 2: 1, 1 -> all equal -> exactly 0
    r = torch.tensor([0.0, 1.0, 1.0, 1.0])
    adv = gm.group_advantages(r, 2)
    s = math.sqrt(0.5) + gm.ADV_EPS
    assert adv.tolist() == pytest.approx([-0.5 / s, 0.5 / s, 0.0, 0.0], abs=1e-6)
    assert adv[2].item() == 0.0 and adv[3].item() == 0.0


def test_group_advantages_group_of_four():
    # rewards 1, 0, 0, -0.2: mean 0.2; deviations 0.8, -0.2, -0.2, -0.4
    # sample var = (0.64 + 0.04 + 0.04 + 0.16) / 3 = 0.29333
    r = torch.tensor([1.0, 0.0, 0.0, -0.2])
    adv = gm.group_advantages(r, 4)
    s = math.sqrt(0.88 / 3) + gm.ADV_EPS
    assert adv.tolist() == pytest.approx([0.8 / s, -0.2 / s, -0.2 / s, -0.4 / s], abs=1e-5)
    assert gm.zero_advantage_groups(torch.tensor([1.0, 1, 0, 1, 0.5, 0.5]), 2).tolist() == [True, False, True]


def test_k3_kl_hand_computed():
    logp = torch.tensor([math.log(0.5), math.log(0.2), -1.0])
    ref = torch.tensor([math.log(0.25), math.log(0.2), -1.0])
    kl = gm.k3_kl(logp, ref)
    # d = log(0.25/0.5) = -ln2 -> e^d - d - 1 = 0.5 + ln2 - 1 = 0.193147
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert kl[1].item() == 0.0 and kl[2].item() == 0.0
    assert (gm.k3_kl(torch.randn(50), torch.randn(50)) >= 0).all()


def test_clipped_surrogate_hand_computed():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.1, 0.9
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.9]]))
    loss, clipped = gm.clipped_surrogate(logp, old, torch.tensor([1.0]), 0.2)
    # A>0: -min(r, clip(r)) -> -1.2 (clipped), -0.5 (not clipped: smaller), -1.1, -0.9
    assert loss[0].tolist() == pytest.approx([-1.2, -0.5, -1.1, -0.9], abs=1e-6)
    assert clipped[0].tolist() == [True, False, False, False]
    loss, clipped = gm.clipped_surrogate(logp, old, torch.tensor([-2.0]), 0.2)
    # A<0: -min(-2r, -2clip(r)) = max(2r, 2clip(r)) -> 3.0, 1.6 (clipped), 2.2, 1.8
    assert loss[0].tolist() == pytest.approx([3.0, 1.6, 2.2, 1.8], abs=1e-6)
    assert clipped[0].tolist() == [False, True, False, False]


def test_token_log_probs_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    tok = torch.randint(0, 7, (2, 3))
    want = torch.log_softmax(logits / 0.7, -1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(gm.token_log_probs(logits, tok, temperature=0.7), want, atol=1e-6)


def test_grpo_loss_token_mean_and_split_invariance():
    # two responses, lengths 3 and 1; ratio 1 everywhere, beta 0: loss = -(sum A_i * len_i) / 4
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -1.0])
    parts = gm.grpo_loss(logp, logp.detach(), None, adv, mask, beta=0.0)
    assert parts.loss.item() == pytest.approx(-(3 * 1 - 1 * 1) / 4)
    assert parts.tokens == 4 and parts.clipped_tokens == 0
    # splitting into micro-batches with the global normaliser gives the same gradient
    parts.loss.backward()
    full = logp.grad.clone()
    logp.grad = None
    for i in range(2):
        gm.grpo_loss(logp[i:i + 1], logp.detach()[i:i + 1], None, adv[i:i + 1], mask[i:i + 1],
                     beta=0.0, normaliser=4).loss.backward()
    assert torch.allclose(logp.grad, full)


def test_grpo_loss_with_kl():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    parts = gm.grpo_loss(logp, logp, ref, torch.tensor([0.0]), torch.ones(1, 1), beta=0.1)
    assert parts.loss.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1), abs=1e-6)
    assert parts.kl_sum == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)


def test_kl_estimators_hand_computed_value_and_gradient():
    """One token, logp = 0 (p = 1 on the sampled token's log scale), ref = -1, old = logp (on-policy).

    d = ref - logp = -1, k3 = e^-1 + 1 - 1 = 0.36788 for both estimators (the ratio is 1 on-policy).
    Gradients w.r.t. logp: k3: d/dlogp (e^(ref-logp) - (ref-logp) - 1) = 1 - e^-1 = 0.63212;
    k3_ratio: k3 * e^(logp-old) -> (1 - e^d) + k3 = -d = logp - ref = 1.0 (the reverse-KL gradient)."""
    for est, grad in (("k3", 1 - math.exp(-1)), ("k3_ratio", 1.0)):
        logp = torch.tensor([[0.0]], requires_grad=True)
        old = torch.tensor([[0.0]])
        ref = torch.tensor([[-1.0]])
        kl = gm.kl_term(logp, old, ref, est)
        assert kl.item() == pytest.approx(math.exp(-1), abs=1e-6)
        kl.sum().backward()
        assert logp.grad.item() == pytest.approx(grad, abs=1e-6), est


def test_kl_ratio_off_policy_and_through_grpo_loss():
    """Off-policy (logp 0, old -0.5): k3_ratio = k3 * e^0.5; through grpo_loss with zero advantage
    the loss is beta * that, and the KL gradient is e^0.5 * (k3 + 1 - e^d) = e^0.5 * 1."""
    logp = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[-0.5]])
    ref = torch.tensor([[-1.0]])
    k3 = math.exp(-1)
    parts = gm.grpo_loss(logp, old, ref, torch.tensor([0.0]), torch.ones(1, 1), beta=0.1, kl_estimator="k3_ratio")
    assert parts.loss.item() == pytest.approx(0.1 * k3 * math.exp(0.5), abs=1e-6)
    parts.loss.backward()
    assert logp.grad.item() == pytest.approx(0.1 * math.exp(0.5) * (k3 + 1 - math.exp(-1)), abs=1e-6)
    with pytest.raises(ValueError, match="k3_ratio"):
        gm.kl_term(logp, old, ref, "k2")


def test_recipe_kl_estimator_validated():
    from mmrbench.errors import ConfigError
    from mmrbench.train.recipe import load_recipe

    assert load_recipe(None, "grpo").train.kl_estimator == "k3"
    assert load_recipe(None, "grpo", {"grpo.kl_estimator": "k3_ratio"}).train.kl_estimator == "k3_ratio"
    with pytest.raises(ConfigError, match="grpo.kl_estimator 'k1' unknown"):
        load_recipe(None, "grpo", {"grpo.kl_estimator": "k1"})
