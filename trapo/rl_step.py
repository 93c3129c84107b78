"""One training step of TRAPO or a baseline, for every engine: the glue between the pure pieces.

    RL:  micro-group rollouts (trapo.rollout) -> rewards -> group advantages (trapo.advantages)
         -> one update on trapo.losses.policy_loss, every token sum over Dr.GRPO's constant normaliser
    SFT: one update on the reference solutions (`prefix_loss="sft"`, normalised by their token count)

`trapo.losses` and `trapo.advantages` are pure functions of tensors; this module decides, from a method config
(conf/method/*.yaml), what goes into them and what comes out as the step's metrics. The engines only move data:
the local trainer (trapo.trainer) and engine (trapo.engines.local), OpenRLHF's rollout agent, actor and logger
(trapo.engines.openrlhf), and, outside trapo/, experiments/benchmark.py and scripts/gpu_check.py call it too.

An engine here is anything with `train_step(samples, *, normalizer, prefix_loss, alpha, gamma, entropy_coef,
temperature=1.0) -> stats` (`LocalEngine`); stats has loss, pg_loss, prefix_loss, grad_norm, lr, finite and the
`TOKEN_SUMS` of `token_sums` (whose expert statistics count the tokens below `alpha`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from trapo import advantages as adv_lib
from trapo.guidance import GuidanceSchedule
from trapo.rollout import DecodeFn, GenerateFn, Prompt, RewardFn, Sample, rollout


# ---- the method's switches ------------------------------------------------------------------------
def is_adaptive(method) -> bool:
    """Micro-group rounds with expert prefixes where rewards are low (TRAPO and its ablation chain)."""
    return method.guidance == "adaptive"


def logs_guidance(method) -> bool:
    """Methods that train on expert tokens log guidance levels and the expert-token statistics."""
    return is_adaptive(method) or bool(method.off_policy)


@dataclass(frozen=True)
class LossSettings:
    """A method's loss switches, as `trapo.losses.policy_loss` and the engines' `train_step` take them."""

    prefix_loss: str
    alpha: float
    gamma: float
    entropy_coef: float

    @classmethod
    def of(cls, method) -> "LossSettings":
        return cls(prefix_loss=str(method.prefix_loss), alpha=float(method.alpha), gamma=float(method.gamma),
                   entropy_coef=float(method.entropy_coef))

    def kwargs(self) -> dict[str, Any]:
        return {"prefix_loss": self.prefix_loss, "alpha": self.alpha, "gamma": self.gamma,
                "entropy_coef": self.entropy_coef}


# ---- rollouts and advantages ------------------------------------------------------------------------
@dataclass
class Rollouts:
    samples: list[Sample]  # with rewards and advantages
    levels: torch.Tensor  # [prompts] guidance level of each prompt
    rewards: torch.Tensor  # [samples]
    groups: torch.Tensor  # [samples] the prompt of each sample


def set_advantages(samples: Sequence[Sample], method) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's advantage against its group's mean reward (Dr.GRPO; guided samples in the mean or not,
    `method.baseline_includes_guided`; std scaling with `method.scale_by_std`). Returns (rewards, groups)."""
    rewards = torch.tensor([s.reward for s in samples])
    groups = torch.tensor([s.group for s in samples])
    in_base = torch.tensor([bool(method.baseline_includes_guided) or not s.guided for s in samples])
    advs = adv_lib.group_advantages(rewards, groups, in_base, scale_by_std=bool(method.scale_by_std))
    for s, a in zip(samples, advs.tolist()):
        s.advantage = a
    return rewards, groups


def collect_rollouts(prompts: Sequence[Prompt], schedule: GuidanceSchedule, method, *, generate: GenerateFn,
                     decode: DecodeFn, reward_fn: RewardFn, max_new_tokens: int) -> Rollouts:
    """Every prompt's group (micro-group rounds for adaptive methods, LUFFY's reference as the last member for
    off-policy ones), rewarded, with advantages. `max_new_tokens` caps a response (prefix + completion)."""
    samples, levels = rollout(prompts, schedule, generate=generate, decode=decode, reward_fn=reward_fn,
                              max_response_tokens=int(max_new_tokens), adaptive=is_adaptive(method),
                              off_policy_reference=bool(method.off_policy))
    rewards, groups = set_advantages(samples, method)
    return Rollouts(samples, levels, rewards, groups)


# ---- the update -------------------------------------------------------------------------------------
def dr_grpo_normalizer(n_samples: float, max_new_tokens: int) -> float:
    """Dr.GRPO's constant: a step's token sums are divided by its samples x the maximum response length (not by
    the number of tokens), so every token weighs the same whatever the length of its sequence."""
    return float(n_samples * int(max_new_tokens))


# How a step's token losses become one number (verl names the choice `loss_agg_mode`): every RL method here uses
# Dr.GRPO's "seq-mean-token-sum-norm" (token sums / (samples x max response length)); SFT steps "token-mean"
RL_LOSS_AGG_MODE, SFT_LOSS_AGG_MODE = "seq-mean-token-sum-norm", "token-mean"


def loss_normalizer(loss_agg_mode: str, *, n_samples: float = 0, max_new_tokens: int = 0, n_tokens: float = 0) -> float:
    """What a step's token sums are divided by under `loss_agg_mode` (one of the two above)."""
    if loss_agg_mode == RL_LOSS_AGG_MODE:
        return dr_grpo_normalizer(n_samples, max_new_tokens)
    if loss_agg_mode == SFT_LOSS_AGG_MODE:
        return float(n_tokens)  # the mean over the trained tokens
    raise ValueError(f"loss_agg_mode must be {RL_LOSS_AGG_MODE!r} or {SFT_LOSS_AGG_MODE!r}, got {loss_agg_mode!r}")


def expert_scale(sample: Sample) -> float:
    """What multiplies a sample's expert-token loss: 1, or the advantage for LUFFY's off-policy reference (-A f(p))."""
    return sample.advantage if sample.off_policy else 1.0


@dataclass
class TokenBatch:
    """A micro-batch as the loss sees it, the same for every engine: [B, T] aligned with the scored tokens (the
    targets), [B] per sample. The local engine collates it from samples (`TokenBatch.columns`), OpenRLHF's actor
    from its experience's columns (trapo/engines/openrlhf/actor.py); both hand it to `batch_loss`.

    - `policy_mask`: 1 on the policy's own sampled tokens, which the policy gradient trains;
    - `expert_weight`: the weight of each expert token's loss (the expert prefix, or LUFFY's whole reference): 1,
      0 off the expert tokens, 0 on a prefix copy whose loss another sample of its micro-group carries;
    - `expert_scale`: [B] what multiplies the sample's expert loss (`expert_scale`: LUFFY's advantage, else 1);
    - `advantages`: [B]; `unguided`: [B] sampled without an expert prefix (rewards, lengths, entropy are theirs).
    """

    policy_mask: torch.Tensor
    expert_weight: torch.Tensor
    expert_scale: torch.Tensor
    advantages: torch.Tensor
    unguided: torch.Tensor

    @staticmethod
    def columns(samples: Sequence[Sample], width: int) -> dict[str, torch.Tensor]:
        """The fields for `samples`, each sample's prefix + completion right-padded to `width` tokens."""
        n = len(samples)
        policy, expert = torch.zeros((n, width)), torch.zeros((n, width))
        for i, s in enumerate(samples):
            k, c = len(s.expert_ids), len(s.expert_ids) + len(s.completion_ids)
            expert[i, :k] = s.expert_weight
            policy[i, k:c] = 1.0
        return {"policy_mask": policy, "expert_weight": expert,
                "expert_scale": torch.tensor([expert_scale(s) for s in samples], dtype=torch.float32),
                "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
                "unguided": torch.tensor([not s.guided for s in samples])}


def batch_loss(logprobs: torch.Tensor, batch: TokenBatch, loss: LossSettings, *, entropy: torch.Tensor | None,
               normalizer: float, old_logprobs: torch.Tensor | None = None, clip_eps: float = 0.2):
    """`trapo.losses.policy_loss` on a TokenBatch: the one place where the expert weights meet their scale."""
    from trapo.losses import policy_loss

    return policy_loss(logprobs, batch.advantages, batch.policy_mask, batch.expert_weight * batch.expert_scale[:, None],
                       entropy=entropy, normalizer=normalizer, old_logprobs=old_logprobs, clip_eps=clip_eps,
                       **loss.kwargs())


TOKEN_SUMS = ("ent_sum", "ent_tok", "exp_p_sum", "exp_tok", "exp_low")


@torch.no_grad()
def token_sums(logprobs: torch.Tensor, entropy: torch.Tensor, batch: TokenBatch, alpha: float) -> dict[str, float]:
    """A micro-batch's sums for the step's diagnostics: the entropy over the policy tokens of unguided samples, and
    over the expert tokens (`expert_weight` > 0) their probability and how many lie below alpha (where TrSFT scales
    the gradient down by p / alpha)."""
    unguided_rl = batch.policy_mask * batch.unguided[:, None]
    expert = batch.expert_weight > 0
    p = logprobs.detach().float().exp()[expert]
    return {"ent_sum": float((entropy.detach().float() * unguided_rl).sum()), "ent_tok": float(unguided_rl.sum()),
            "exp_p_sum": float(p.sum()), "exp_tok": float(expert.sum()), "exp_low": float((p < alpha).sum())}


def update(engine, samples: Sequence[Sample], method, max_new_tokens: int,
           temperature: float = 1.0) -> dict[str, float]:
    """One optimizer step of the method's RL objective over `samples` (advantages set). `temperature` is the one
    the rollouts sampled at: the update scores log softmax(logits / T), so its gradient is the policy gradient
    of the policy that sampled (as TRL, verl and OpenRLHF do)."""
    normalizer = loss_normalizer(RL_LOSS_AGG_MODE, n_samples=len(samples), max_new_tokens=max_new_tokens)
    return engine.train_step(samples, normalizer=normalizer, temperature=float(temperature),
                             **LossSettings.of(method).kwargs())


@dataclass
class RLStep:
    rollouts: Rollouts
    stats: dict[str, float]  # the engine's train_step statistics
    rollout_s: float  # rollouts, rewards and advantages
    update_s: float


def rl_step(engine, prompts: Sequence[Prompt], schedule: GuidanceSchedule, method, *, generate: GenerateFn,
            decode: DecodeFn, reward_fn: RewardFn, max_new_tokens: int, temperature: float = 1.0) -> RLStep:
    """One RL step: rollouts with advantages (`collect_rollouts`), then one update (`update`) at the sampling
    `temperature` (the one `generate` samples at)."""
    t0 = time.perf_counter()
    ro = collect_rollouts(prompts, schedule, method, generate=generate, decode=decode, reward_fn=reward_fn,
                          max_new_tokens=max_new_tokens)
    t1 = time.perf_counter()
    stats = update(engine, ro.samples, method, max_new_tokens, temperature=temperature)
    return RLStep(ro, stats, rollout_s=t1 - t0, update_s=time.perf_counter() - t1)


def sft_step(engine, prompts: Sequence[Prompt], method, *, max_new_tokens: int) -> dict[str, float]:
    """One SFT update on the prompts' reference solutions (NLL, normalised by their token count); the
    expert-token statistics use the method's alpha. A solution is cut to `max_new_tokens` (rollout.max_new_tokens),
    as every other method's expert tokens are (RL prefixes, LUFFY, ReLIFT, OpenRLHF's SFT): one token budget."""
    samples = [Sample(g, 0, p.prompt_ids, p.solution_ids[: int(max_new_tokens)], [], reward=1.0)
               for g, p in enumerate(prompts)]
    normalizer = loss_normalizer(SFT_LOSS_AGG_MODE, n_tokens=sum(len(s.expert_ids) for s in samples))
    # the SFT loss reads no alpha; the method's goes along for the expert statistics (tokens below it)
    return engine.train_step(samples, normalizer=normalizer, prefix_loss="sft", alpha=float(method.alpha), gamma=0.0,
                             entropy_coef=0.0)


# ---- metrics ----------------------------------------------------------------------------------------
def level_metric(level: int) -> str:
    return f"train/guidance_level_{level}"


def token_metrics(sums: Mapping[str, float], *, with_expert: bool) -> dict[str, float]:
    """train/entropy (over unguided RL tokens) and, for methods with expert tokens, train/expert_token_prob and
    train/expert_low_prob_frac, from a step's `TOKEN_SUMS`."""
    out = {"train/entropy": sums["ent_sum"] / max(sums["ent_tok"], 1.0)}
    if with_expert:
        out["train/expert_token_prob"] = sums["exp_p_sum"] / max(sums["exp_tok"], 1.0)
        out["train/expert_low_prob_frac"] = sums["exp_low"] / max(sums["exp_tok"], 1.0)
    return out


def sft_metrics(stats: Mapping[str, float]) -> dict[str, float]:
    return {"train/loss": stats["loss"], "train/grad_norm": stats["grad_norm"], "train/lr": stats["lr"]}


def rl_metrics(step: RLStep, method, n_levels: int) -> dict[str, float]:
    """The metrics of one RL step (the names every engine logs; rewards and lengths over unguided samples)."""
    ro, st = step.rollouts, step.stats
    unguided = [s for s in ro.samples if not s.guided]
    tokens = token_metrics(st, with_expert=logs_guidance(method))
    metrics = {
        "train/loss": st["loss"],
        "train/pg_loss": st["pg_loss"],
        "train/prefix_loss": st["prefix_loss"],
        "train/grad_norm": st["grad_norm"],
        "train/lr": st["lr"],
        "train/reward_mean": float(np.mean([s.reward for s in unguided])) if unguided else float("nan"),
        "train/reward_all_mean": float(ro.rewards.mean()),
        "train/response_length": float(np.mean([len(s.completion_ids) for s in unguided])) if unguided else 0.0,
        "train/entropy": tokens.pop("train/entropy"),
        "train/zero_signal_frac": adv_lib.zero_signal_fraction(ro.rewards, ro.groups),
        "time/rollout_s": step.rollout_s,
        "time/update_s": step.update_s,
    }
    if logs_guidance(method):
        for lvl in range(n_levels):
            metrics[level_metric(lvl)] = float((ro.levels == lvl).float().mean())
        metrics.update(tokens)
    return metrics
