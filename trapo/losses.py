"""Token-level losses of TRAPO and its baselines: pure functions of tensors.

Every `*_token_loss` returns a [batch, tokens] tensor; `masked_mean` sums it under a mask and divides by
a normaliser. The engines compute log-probs (and entropy) and call `policy_loss`, which holds the whole
objective of one update in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PREFIX_LOSSES = ("none", "sft", "luffy", "trsft")


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask.to(values.dtype)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """Sum of `values` under `mask` divided by `normalizer` (default: number of masked tokens).

    A constant normaliser (Dr.GRPO divides by the maximum response length) weights every token the
    same whatever the length of its sequence.
    """
    denom = mask.sum().clamp(min=1).to(values.dtype) if normalizer is None else normalizer
    return masked_sum(values, mask) / denom


def trsft_token_loss(logprobs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Trust-region SFT per token.

    The paper writes loss_t = -p / max(sg(p), alpha), whose gradient w.r.t. log p is -min(1, p/alpha).
    We use the same gradient in NLL form, loss_t = sg(min(1, p/alpha)) * (-log p): identical updates, and
    a value that is exactly the SFT loss when alpha = 0 (the weight is then 1 on every token).
    """
    if alpha < 0:
        raise ValueError(f"trust-region alpha must be >= 0, got {alpha}")
    if alpha == 0:
        weight = torch.ones_like(logprobs)
    else:
        weight = (logprobs.detach().exp() / alpha).clamp(max=1.0)
    return -weight * logprobs


def trsft_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, alpha: float, normalizer: float | None = None
) -> torch.Tensor:
    """Scalar TrSFT loss over the masked (expert) tokens; see `trsft_token_loss`."""
    return masked_mean(trsft_token_loss(logprobs, alpha), mask, normalizer)


def sft_token_loss(logprobs: torch.Tensor) -> torch.Tensor:
    """Plain SFT (negative log-likelihood): gradient -1 on every token, however unlikely."""
    return -logprobs


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    return masked_mean(sft_token_loss(logprobs), mask, normalizer)


def luffy_token_loss(logprobs: torch.Tensor, gamma: float) -> torch.Tensor:
    """LUFFY's policy shaping on expert tokens with advantage +1: loss_t = -f(p), f(p) = p / (p + gamma).

    Gradient w.r.t. log p is -gamma * p / (p + gamma)^2: large for mid-probability tokens, small for
    both very unlikely and already-certain ones.
    """
    p = logprobs.exp()
    return -p / (p + gamma)


def pg_token_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """Clipped policy-gradient loss per token (PPO form; Dr.GRPO uses it without std normalisation).

    `advantages` is [batch] or [batch, tokens]. With one on-policy update per batch, `old_logprobs` are
    the current log-probs (the default), the ratio is 1, no clipping is active and the gradient is
    -A * grad log p.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    if old_logprobs is None:
        old_logprobs = logprobs.detach()
    ratio = (logprobs - old_logprobs).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _setting(value: float | None, name: str, kind: str) -> float:
    if value is None:
        raise ValueError(f"prefix loss {kind!r} needs {name} (the method config's method.{name})")
    return float(value)


def prefix_token_loss(logprobs: torch.Tensor, kind: str, alpha: float | None = None,
                      gamma: float | None = None) -> torch.Tensor:
    """The loss on expert-prefix tokens for each method of the ablation chain. TrSFT needs its trust region
    `alpha`, LUFFY its shaping `gamma`; both come from the method config (conf/method/), never from a default."""
    if kind == "trsft":
        return trsft_token_loss(logprobs, _setting(alpha, "alpha", kind))
    if kind == "sft":
        return sft_token_loss(logprobs)
    if kind == "luffy":
        return luffy_token_loss(logprobs, _setting(gamma, "gamma", kind))
    if kind == "none":
        return torch.zeros_like(logprobs)
    raise ValueError(f"unknown prefix loss {kind!r}; expected one of {PREFIX_LOSSES}")


@dataclass
class LossOutput:
    loss: torch.Tensor
    pg_loss: torch.Tensor
    prefix_loss: torch.Tensor
    entropy: torch.Tensor  # mean entropy over RL tokens (detached)


def policy_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    rl_mask: torch.Tensor,
    prefix_mask: torch.Tensor,
    *,
    prefix_loss: str,
    alpha: float | None = None,
    gamma: float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    normalizer: float | None = None,
    old_logprobs: torch.Tensor | None = None,
    clip_eps: float = 0.2,
) -> LossOutput:
    """TRAPO's objective for one batch: RL on the policy's own tokens + a prefix loss on expert tokens.

    All tensors are [batch, tokens] except `advantages` ([batch]). `rl_mask` marks generated tokens,
    `prefix_mask` the expert-prefix tokens that carry the prefix loss (deduplicated by the caller).
    Token sums are divided by one constant `normalizer` (Dr.GRPO: the maximum response length).
    `alpha` (TrSFT) and `gamma` (LUFFY) are needed by their prefix loss only (`prefix_token_loss`).
    The entropy bonus is subtracted on RL tokens. GRPO is `prefix_loss="none"` with no prefixes;
    SFT is an all-zero `rl_mask` with `prefix_loss="sft"` on the whole reference solution.
    """
    if normalizer is None:
        normalizer = float((rl_mask.sum() + prefix_mask.sum()).clamp(min=1))
    pg = masked_sum(pg_token_loss(logprobs, advantages, old_logprobs, clip_eps), rl_mask) / normalizer
    pre = masked_sum(prefix_token_loss(logprobs, prefix_loss, alpha, gamma), prefix_mask) / normalizer
    loss = pg + pre
    if entropy is not None:
        if entropy_coef:
            loss = loss - entropy_coef * masked_sum(entropy, rl_mask) / normalizer
        ent = masked_mean(entropy.detach(), rl_mask)
    else:
        ent = torch.zeros((), device=logprobs.device)
    return LossOutput(loss=loss, pg_loss=pg.detach(), prefix_loss=pre.detach(), entropy=ent)
