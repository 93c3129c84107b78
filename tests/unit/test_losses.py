import math

import pytest
import torch

from trapo.losses import (
    entropy_from_logits,
    luffy_token_loss,
    masked_mean,
    pg_token_loss,
    policy_loss,
    sft_loss,
    trsft_loss,
)

PROBS = torch.tensor([[0.9, 0.5, 0.1, 0.05, 0.01, 0.3]])


def grads(fn, probs=PROBS):
    logp = probs.log().clone().requires_grad_(True)
    loss = fn(logp)
    loss.backward()
    return loss, logp.grad


@pytest.mark.parametrize("alpha", [0.1, 0.3, 1.0])
def test_trsft_gradient_is_min_one_p_over_alpha(alpha):
    mask = torch.ones_like(PROBS)
    _, g = grads(lambda lp: trsft_loss(lp, mask, alpha))
    n = mask.sum()
    expected = -torch.clamp(PROBS / alpha, max=1.0) / n
    torch.testing.assert_close(g, expected)
    # ratios between tokens equal min(1, p/alpha) ratios, whatever the normaliser
    w = torch.clamp(PROBS / alpha, max=1.0)
    torch.testing.assert_close(g / g[0, 0], w / w[0, 0])


def test_trsft_alpha_zero_is_sft_in_value_and_gradient():
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0, 0.0]])
    l0, g0 = grads(lambda lp: trsft_loss(lp, mask, 0.0))
    ls, gs = grads(lambda lp: sft_loss(lp, mask))
    torch.testing.assert_close(l0, ls)
    torch.testing.assert_close(g0, gs)
    assert torch.all(g0[mask == 0] == 0)
    assert torch.allclose(g0[mask == 1], torch.full((4,), -0.25))


def test_trsft_matches_paper_form():
    """The paper's -p / max(sg(p), alpha) has the same gradient as ours."""
    alpha = 0.2
    mask = torch.ones_like(PROBS)
    _, ours = grads(lambda lp: trsft_loss(lp, mask, alpha, normalizer=1.0))
    _, paper = grads(lambda lp: (-(lp.exp() / lp.exp().detach().clamp(min=alpha))).sum())
    torch.testing.assert_close(ours, paper)


def test_trsft_rejects_negative_alpha():
    with pytest.raises(ValueError, match="alpha"):
        trsft_loss(PROBS.log(), torch.ones_like(PROBS), -0.1)


def test_trsft_constant_normaliser():
    mask = torch.ones_like(PROBS)
    _, g = grads(lambda lp: trsft_loss(lp, mask, 0.1, normalizer=100.0))
    torch.testing.assert_close(g, -torch.clamp(PROBS / 0.1, max=1.0) / 100.0)


def test_luffy_shaping_value_and_gradient():
    gamma = 0.1
    loss, g = grads(lambda lp: luffy_token_loss(lp, gamma).sum())
    p = PROBS
    torch.testing.assert_close(loss, (-p / (p + gamma)).sum())
    # d/dlogp [-p/(p+g)] = -g p / (p+g)^2
    torch.testing.assert_close(g, -gamma * p / (p + gamma) ** 2)


def test_pg_loss_on_policy_gradient_is_minus_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([0.5, -1.0])
    loss = pg_token_loss(logp, adv).sum()
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -0.5], [1.0, 1.0]]))
    torch.testing.assert_close(loss.detach(), torch.tensor(-(0.5 * 2) + 1.0 * 2))


def test_pg_loss_clips_off_policy_ratio():
    logp = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[math.log(0.5)]])  # ratio 2, clipped to 1.2 for a positive advantage
    loss = pg_token_loss(logp, torch.tensor([1.0]), old_logprobs=old, clip_eps=0.2).sum()
    assert loss.item() == pytest.approx(-1.2)
    loss.backward()
    assert logp.grad.item() == 0.0  # the clipped branch carries no gradient


def test_entropy_uniform_and_peaked():
    assert entropy_from_logits(torch.zeros(1, 8)).item() == pytest.approx(math.log(8))
    assert entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_masked_mean_default_and_constant():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    m = torch.tensor([[1.0, 0.0, 1.0]])
    assert masked_mean(v, m).item() == pytest.approx(2.0)
    assert masked_mean(v, m, normalizer=8.0).item() == pytest.approx(0.5)


def test_policy_loss_combines_terms_with_one_normaliser():
    # sample 0: two RL tokens with advantage 1; sample 1: two expert tokens (TrSFT) and one RL token (adv -1)
    probs = torch.tensor([[0.5, 0.5, 0.5], [0.05, 0.8, 0.5]])
    logp = probs.log().requires_grad_(True)
    rl = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pre = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    out = policy_loss(logp, torch.tensor([1.0, -1.0]), rl, pre, prefix_loss="trsft", alpha=0.1, normalizer=10.0)
    out.loss.backward()
    expected = torch.tensor([[-1.0, -1.0, 0.0], [-0.5, -1.0, 1.0]]) / 10.0
    torch.testing.assert_close(logp.grad, expected)
    # value: pg = (-1 -1 +1)/10 ; prefix = (0.5*-log .05 + 1*-log .8)/10
    assert out.pg_loss.item() == pytest.approx(-0.1)
    assert out.prefix_loss.item() == pytest.approx((0.5 * -math.log(0.05) - math.log(0.8)) / 10, rel=1e-5)


def test_policy_loss_prefix_none_ignores_prefix_tokens():
    logp = torch.full((1, 3), -1.0, requires_grad=True)
    out = policy_loss(logp, torch.tensor([0.0]), torch.zeros(1, 3), torch.ones(1, 3), prefix_loss="none")
    out.loss.backward()
    assert torch.all(logp.grad == 0)


def test_policy_loss_entropy_bonus_sign():
    logits = torch.zeros(1, 2, 4, requires_grad=True)
    logits_data = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    lg = (logits + logits_data)
    ent = entropy_from_logits(lg)
    logp = torch.log_softmax(lg, -1)[..., 0]
    out = policy_loss(logp, torch.tensor([0.0]), torch.ones(1, 2), torch.zeros(1, 2), prefix_loss="none",
                      entropy=ent, entropy_coef=1.0, normalizer=1.0)
    out.loss.backward()
    # minimising -entropy pushes the peaked position's top logit down
    assert logits.grad[0, 0, 0] > 0
    assert out.entropy.item() == pytest.approx(float(ent.mean()))
