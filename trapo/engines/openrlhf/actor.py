"""TRAPO's actor update inside OpenRLHF's DeepSpeed actor: `trapo.losses.policy_loss` on an Experience.

`ActorPPOTrainer.training_step` (OpenRLHF 0.11.2) hands only `action_mask` to its PPO loss, so the
subclass below replaces the step: the same Actor forward (log-probs of the action tokens, entropy), then
TRAPO's objective with the masks rebuilt from the per-sample scalars that the rollout agent put in
`Experience.info` (see `agent.py`):

    expert = action_mask & (cumsum(action_mask) <= trapo_prefix_len)   TrSFT (x prefix weight and scale)
    rl     = action_mask & ~expert                                     policy gradient with trapo_advantage

Log-probs and entropy are those of softmax(logits / rollout.temperature), the sampling policy (`adopt`).

Normaliser: the local engine divides every token sum of a step by n_samples x rollout.max_new_tokens
(Dr.GRPO's constant, `trapo.rl_step.dr_grpo_normalizer`). DeepSpeed divides each micro-batch loss by the
gradient-accumulation steps and averages gradients over data-parallel ranks, and OpenRLHF gives each
micro-batch the step's sample count divided by those steps (`loss_batch_info["global_batch_size"]`), so

    normaliser = global_batch_size x max_new_tokens / dp_size

gives the gradient of sum(all tokens of the step) / (n_samples x max_new_tokens) after DeepSpeed's
scaling -- the local engine's update (tests/openrlhf_engine/test_openrlhf_parity.py checks it to 1e-5).

Metrics: OpenRLHF averages each metric over the step's samples (weighted by micro-batch size). Totals
(loss, entropy sums, expert-token sums) are reported as value x n_step / n_micro so that average is the
step's total; per-sample values are reported per sample. `mlflow_logger.trapo_metrics` turns them into
the local engine's metric names. The loss switches, the expert-token sums and the normaliser are
`trapo.rl_step`'s, as the local engine's.

Step hooks (trapo/hooks.py `ActorHook`; a method's runner names them, e.g. an SFT step of its own): each micro-batch
goes to `collect`, each applied update to `after_step` (`drop_step` when DeepSpeed skipped it), and their state is
saved and loaded with OpenRLHF's checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from trapo.rl_step import (RL_LOSS_AGG_MODE, TOKEN_SUMS, LossSettings, TokenBatch, batch_loss, logs_guidance,
                           loss_normalizer, token_sums)

from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer
from openrlhf.utils.loss_utils import get_loss_batch_info

INFO_KEYS = ("trapo_prefix_len", "trapo_prefix_weight", "trapo_prefix_scale", "trapo_advantage",
             "trapo_level", "trapo_guided", "trapo_completion_len", "trapo_zero_signal")


@dataclass(frozen=True)
class ActorSettings:
    loss: LossSettings
    max_new_tokens: int
    n_levels: int  # guidance levels logged (the local trainer's: the configured schedule's rounds)
    log_levels: bool

    @classmethod
    def from_config(cls, cfg) -> "ActorSettings":
        from trapo.guidance import guidance_schedule

        return cls(loss=LossSettings.of(cfg.method), max_new_tokens=int(cfg.rollout.max_new_tokens),
                   n_levels=guidance_schedule(cfg).n_rounds, log_levels=logs_guidance(cfg.method))


def per_sample(value, device) -> torch.Tensor:
    """A per-sample value of Experience.info as a float [B] tensor (the replay buffer hands back lists)."""
    if isinstance(value, (list, tuple)):
        value = torch.stack([torch.as_tensor(v).reshape(()) for v in value])
    return torch.as_tensor(value).to(device).float().reshape(-1)


def trapo_masks(action_mask: torch.Tensor, prefix_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert, rl) bool masks [B, A]: the first `prefix_len` action tokens of a row are the expert prefix."""
    act = action_mask.bool()
    pos = act.long().cumsum(-1)
    expert = act & (pos <= prefix_len.to(pos.device).long().unsqueeze(-1))
    return expert, act & ~expert


def token_batch(action_mask: torch.Tensor, col: Mapping[str, torch.Tensor]) -> TokenBatch:
    """The loss's TokenBatch from an experience's action mask and the agent's per-sample columns (`INFO_KEYS`)."""
    expert, policy = trapo_masks(action_mask, col["trapo_prefix_len"])
    return TokenBatch(policy_mask=policy.float(), expert_weight=expert.float() * col["trapo_prefix_weight"][:, None],
                      expert_scale=col["trapo_prefix_scale"], advantages=col["trapo_advantage"],
                      unguided=col["trapo_guided"] == 0)


def step_counts(engine) -> tuple[int, int]:
    """(optimizer steps, of them skipped) of a DeepSpeed engine. A step whose gradients overflowed (the fp16 loss
    scaler's non-finite check) counts in both and changes no weight (`DeepSpeedEngine._take_model_step`)."""
    return int(engine.global_steps), int(engine.skipped_steps)


def applied_update(before: tuple[int, int], after: tuple[int, int]) -> bool:
    """Whether the optimizer steps between two `step_counts` changed the weights (no step at all: nothing said)."""
    steps, skipped = after[0] - before[0], after[1] - before[1]
    return steps == 0 or skipped < steps


class TrapoActorPPOTrainer(ActorPPOTrainer):
    """OpenRLHF's actor trainer with TRAPO's objective. Built by OpenRLHF, then adopted with `adopt`."""

    trapo: ActorSettings
    hooks: Sequence = ()  # step hooks (trapo/hooks.py ActorHook), set by `adopt`

    def ppo_train(self, kl_ctl: float):
        engine = self.actor.model
        before = step_counts(engine)
        status = super().ppo_train(kl_ctl)
        if not applied_update(before, step_counts(engine)):
            # DeepSpeed skipped the update (non-finite gradients): as the local trainer, no step hook runs -- the
            # step's samples came from a policy the next batch samples again
            status["trapo/skipped_nonfinite"] = 1.0
            for hook in self.hooks:
                hook.drop_step()
        else:
            for hook in self.hooks:
                status.update(hook.after_step(self))
        return status

    def training_step(self, experience, kl_ctl: float, step: int, loss_batch_info: Mapping[str, Any] | None = None):
        st = self.trapo
        args = self.args
        if args.train.dynamic_batch_enable:
            raise ValueError("TRAPO's constant normaliser needs --train.dynamic_batch_enable off")
        self.actor.train()
        if loss_batch_info is None:
            loss_batch_info = get_loss_batch_info(self.strategy, experience.action_mask)
        info = experience.info
        action_mask = experience.action_mask
        n_act = action_mask.shape[1]
        dev = action_mask.device
        col = {k: per_sample(info[k], dev) for k in INFO_KEYS}
        for hook in self.hooks:
            hook.collect(experience, per_sample(info["reward"], dev), col["trapo_zero_signal"])

        logp, output = self.actor(experience.sequences, action_mask, attention_mask=experience.attention_mask,
                                  return_output=True, ring_attn_group=self.strategy.ring_attn_group,
                                  return_entropy=True)
        entropy = output.entropy[:, -n_act:]
        batch = token_batch(action_mask, col)

        dp_size = float(loss_batch_info["dp_size"])
        n_window = float(loss_batch_info["global_batch_size"])  # samples of the optimizer step / accumulation steps
        normalizer = loss_normalizer(RL_LOSS_AGG_MODE, n_samples=n_window, max_new_tokens=st.max_new_tokens) / dp_size
        out = batch_loss(logp, batch, st.loss, entropy=entropy, normalizer=normalizer,
                         old_logprobs=experience.action_log_probs, clip_eps=float(args.actor.eps_clip))
        self.strategy.backward(out.loss, self.actor, self.actor_optim)
        self.strategy.optimizer_step(self.actor_optim, self.actor, self.actor_scheduler, name="actor")
        if self.ema_model:
            self.strategy.moving_average(self.actor, self.ema_model, self.ema_beta, "cuda")

        # ---- metrics (see the module docstring for the weighting) ----
        n_mb = float(action_mask.shape[0])
        gas = float(max(int(getattr(self.strategy, "accumulated_gradient", 1)), 1))
        to_step_total = n_window * gas / n_mb  # x (value of this micro-batch on this rank) -> step total
        # the loss DeepSpeed back-propagates is the step's share times dp_size x gas
        share = 1.0 / (dp_size * gas)
        with torch.no_grad():
            unguided = batch.unguided.float()
            sums = token_sums(logp, entropy, batch, st.loss.alpha)
            totals = {
                "trapo/loss": float(out.loss.detach()) * share,
                "trapo/pg_loss": float(out.pg_loss) * share,
                "trapo/prefix_loss": float(out.prefix_loss) * share,
                **{f"trapo/{k}": sums[k] for k in TOKEN_SUMS},
            }
            metrics: dict[str, Any] = {k: torch.tensor(v * to_step_total) for k, v in totals.items()}
            rewards = per_sample(info["reward"], dev) if "reward" in info else torch.zeros_like(unguided)
            sample_vals = {
                "trapo/reward": rewards,
                "trapo/unguided": unguided,
                "trapo/reward_unguided": rewards * unguided,
                "trapo/len_unguided": col["trapo_completion_len"] * unguided,
                "trapo/zero_signal": col["trapo_zero_signal"],
            }
            for lvl in range(st.n_levels):
                sample_vals[f"trapo/level_{lvl}"] = (col["trapo_level"] == lvl).float()
            metrics.update(sample_vals)
        weights = {k: "sample" for k in metrics}
        # OpenRLHF's progress bar reads "policy_loss"
        metrics["policy_loss"] = metrics["trapo/loss"]
        weights["policy_loss"] = "sample"
        metrics["actor_lr"] = self.actor_scheduler.get_last_lr()[0]
        weights["actor_lr"] = None
        metrics["actor_grad_norm"] = self.strategy.get_grad_norm(self.actor)
        weights["actor_grad_norm"] = None
        return {"metrics": metrics, "weights": weights, "num_samples": n_mb,
                "num_action_tokens": float(action_mask.sum().item())}


def adopt(trainer: ActorPPOTrainer, cfg, hooks: Sequence[type] = ()) -> TrapoActorPPOTrainer:
    """Turn the ActorPPOTrainer that OpenRLHF built into TRAPO's (it adds no state but the settings and the step
    hooks built from `hooks`, each checked against this actor before the first step).

    The actor scores log-probs and entropy at the rollout temperature (OpenRLHF's `Actor.forward` divides the
    logits by `actor.temperature`), as the local engine's update: the gradient is then the policy gradient of
    softmax(logits / T), the policy the rollouts sampled from. Set here from the config, so it does not rest on
    how OpenRLHF built the actor.
    """
    trainer.__class__ = TrapoActorPPOTrainer
    trainer.trapo = ActorSettings.from_config(cfg)
    trainer.hooks = [h for h in (cls.from_config(cfg) for cls in hooks) if h is not None]
    for hook in trainer.hooks:
        hook.check(trainer)
    trainer.actor.temperature = float(cfg.rollout.temperature)
    return trainer


def latest_tag_dir(ckpt_dir: str | Path) -> Path | None:
    """DeepSpeed's newest checkpoint tag directory under `ckpt_dir` (its `latest` file), or None."""
    latest = Path(ckpt_dir) / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    return Path(ckpt_dir) / tag if tag else None


def policy_actor_class(cfg_data: Mapping[str, Any], before_init=None, hooks: Sequence[str] = ()):
    """A Ray actor class for OpenRLHF's `train()` in place of `PolicyModelActor` (shipped by value); `before_init`
    runs in the actor's process before OpenRLHF builds its model (`patches.cpu_route_actor_process` on the CPU route;
    handed in, so that this module does not import patches, which imports it); `hooks`: the step hooks' "module:Class"
    names, imported in the actor's process."""
    import ray

    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    class TrapoPolicyModelActor(PolicyModelActor.__ray_actor_class__):
        trapo_config = dict(cfg_data)
        trapo_before_init = staticmethod(before_init) if before_init is not None else None
        trapo_hooks = tuple(hooks)

        def init_model_from_pretrained(self, *args, **kwargs):
            if self.trapo_before_init is not None:  # engine.rollout=cpu: fp32, CPU buffer, gloo weight sync
                self.trapo_before_init()
            super().init_model_from_pretrained(*args, **kwargs)
            from trapo.engines.openrlhf.settings import as_config
            from trapo.hooks import import_hook

            adopt(self.trainer, as_config(self.trapo_config), [import_hook(h) for h in self.trapo_hooks])
            args = self.strategy.args
            if self.trainer.hooks and args.ckpt.load_enable:  # the hooks' state, beside OpenRLHF's checkpoint
                tag_dir = latest_tag_dir(Path(args.ckpt.path) / "_actor")
                if tag_dir is not None:
                    for hook in self.trainer.hooks:
                        hook.load(tag_dir)

        def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None):
            super().save_checkpoint(tag, client_states, metric_value=metric_value, metric_key=metric_key)
            for hook in self.trainer.hooks:
                hook.save(Path(self.strategy.args.ckpt.path) / "_actor" / tag)

    TrapoPolicyModelActor.__name__ = TrapoPolicyModelActor.__qualname__ = "TrapoPolicyModelActor"
    return ray.remote(num_gpus=1)(TrapoPolicyModelActor)
