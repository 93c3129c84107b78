"""The update is the policy gradient of the policy that sampled: rollouts draw from softmax(logits / T), so the
training forward scores log softmax(logits / T) (as TRL, verl and OpenRLHF do). Checked on bandits against
the gradient of the expected reward J(z) = E_{a ~ softmax(z / T)}[r(a)]."""

import copy
from types import SimpleNamespace

import pytest
import torch

from trapo import rl_step
from trapo.engines.local import LocalEngine, _logprobs_and_entropy
from trapo.engines.sampling import _pick
from trapo.losses import policy_loss
from trapo.rollout import Sample

from test_local_engine import Tok, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

GRPO = SimpleNamespace(prefix_loss="none", alpha=0.1, gamma=0.1, entropy_coef=0.0)


def analytic_grad(z: torch.Tensor, r: torch.Tensor, t: float) -> torch.Tensor:
    """dJ/dz for J = sum_a softmax(z / t)_a r_a: (1 / t) pi (r - pi . r), written out by hand."""
    pi = torch.softmax(z / t, -1)
    return pi * (r - (pi * r).sum()) / t


def engine_grads(engine, samples, **kw) -> list[torch.Tensor]:
    """The gradient the engine's step applies (read at the clip, before AdamW moves the weights)."""
    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *a, **k):
        params = list(params)
        seen.append([p.grad.clone() for p in params])
        return clip(params, *a, **k)

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        rl_step.update(engine, samples, GRPO, **kw)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    return seen[0]


def test_two_action_bandit_sampled_at_half_temperature():
    """Many actions sampled at T = 0.5 by the rollout sampler (`_pick`), GRPO advantages r - mean(r), scored by
    the engine's log-prob function and loss with the logits a free parameter z: the estimated gradient is the
    analytic dJ/dz."""
    t, n = 0.5, 4000
    z0 = torch.tensor([0.3, -0.2])
    r = torch.tensor([1.0, 0.0])
    actions = _pick(z0.expand(n, 2), t, torch.Generator().manual_seed(0))
    rewards = r[actions]
    adv = rewards - rewards.mean()
    z = z0.clone().requires_grad_()
    logp, ent = _logprobs_and_entropy(z.expand(n, 1, 2), actions[:, None], True, temperature=t)
    out = policy_loss(logp, adv, torch.ones(n, 1), torch.zeros(n, 1), prefix_loss="none", entropy=ent,
                      normalizer=float(n))  # -mean(A log pi(a)): an unbiased estimate of -dJ/dz
    out.loss.backward()
    est, want = -z.grad, analytic_grad(z0, r, t)
    # 4 standard errors of the mean of A * d log pi(a) / dz over the n draws
    per = adv[:, None] * (torch.nn.functional.one_hot(actions, 2) - torch.softmax(z0 / t, -1)) / t
    tol = 4 * per.std(0) / n**0.5
    assert torch.all((est - want).abs() <= tol), f"estimated {est.tolist()}, analytic {want.tolist()}, tol {tol}"


@pytest.mark.parametrize("t", [0.5, 1.0, 1.7])
def test_engine_gradient_is_exact_expected_reward_gradient(t):
    """A real transformer: the exact expectation over every first token a (one sample each, advantage
    pi_T(a) r(a) scaled by the normaliser) is dJ/dtheta of J = sum_a softmax(logits / T)_a r(a)."""
    model = tiny_model()
    prompt = [5, 9, 3, 7]
    vocab = model.config.vocab_size
    r = torch.zeros(vocab)
    r[[4, 11, 20]] = torch.tensor([1.0, 0.5, -0.3])
    ref = copy.deepcopy(model).train()
    j = (torch.softmax(ref(torch.tensor([prompt])).logits[0, -1] / t, -1) * r).sum()
    j.backward()
    want = [-p.grad for p in ref.parameters()]  # the engine minimises -J
    with torch.no_grad():
        pi = torch.softmax(model(torch.tensor([prompt])).logits[0, -1] / t, -1)
    max_new = 3
    scale = vocab * max_new  # undoes the Dr.GRPO normaliser (samples x max new tokens)
    samples = [Sample(0, 0, prompt, [], [a], advantage=float(pi[a] * r[a] * scale)) for a in range(vocab)]
    engine = LocalEngine(copy.deepcopy(model), Tok(), lr=0.0, micro_batch_size=7)
    got = engine_grads(engine, samples, max_new_tokens=max_new, temperature=t)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
