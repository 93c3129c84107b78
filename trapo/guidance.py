"""Micro-group adaptive guidance: when a prompt's rollouts get an expert prefix, and how long.

A prompt's G rollouts are drawn in micro-groups, one round after another. Round 0 never has a prefix.
Round i >= 1 gets a prefix of ratio `prefix_ratios[i]` only if the mean reward of all earlier samples of
that prompt is below `thresholds[i - 1]`. A prompt's guidance level is the last round that got a prefix
(0 = never guided, 3 = the whole solution with the default four rounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# where a run config holds the schedule (conf/method/_base.yaml): every method carries one, so train.group_size is
# the same for all; it is read where method.guidance is adaptive
CONFIG_KEY = "method.guidance_schedule"


@dataclass(frozen=True)
class GuidanceSchedule:
    """The defaults are the paper's schedule (`PRESETS["paper"]`): micro-groups (4, 2, 1, 1) of G = 8."""

    group_sizes: tuple[int, ...] = (4, 2, 1, 1)
    prefix_ratios: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    thresholds: tuple[float, ...] = (0.5, 0.7, 0.9)
    # official code: of the samples of a guided round only the first carries the prefix loss
    # (prompts that share a prefix are counted once)
    dedupe_prefix_loss: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_sizes", tuple(int(g) for g in self.group_sizes))
        object.__setattr__(self, "prefix_ratios", tuple(float(r) for r in self.prefix_ratios))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        self.validate()

    @property
    def n_rounds(self) -> int:
        return len(self.group_sizes)

    @property
    def group_size(self) -> int:
        return sum(self.group_sizes)

    def validate(self) -> None:
        n = len(self.group_sizes)
        if n < 1 or any(g < 1 for g in self.group_sizes):
            raise ValueError(f"{CONFIG_KEY}.group_sizes must be positive integers, got {list(self.group_sizes)}")
        if len(self.prefix_ratios) != n:
            raise ValueError(
                f"{CONFIG_KEY}.prefix_ratios needs one ratio per micro-group ({n}), got {list(self.prefix_ratios)}"
            )
        if self.prefix_ratios[0] != 0.0:
            raise ValueError(f"{CONFIG_KEY}.prefix_ratios[0] must be 0: the first micro-group is never guided")
        if any(not 0.0 <= r <= 1.0 for r in self.prefix_ratios):
            raise ValueError(f"{CONFIG_KEY}.prefix_ratios must lie in [0, 1], got {list(self.prefix_ratios)}")
        if len(self.thresholds) != n - 1:
            raise ValueError(
                f"{CONFIG_KEY}.thresholds needs one threshold per guided micro-group ({n - 1}), "
                f"got {list(self.thresholds)}"
            )
        if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:])):
            raise ValueError(f"{CONFIG_KEY}.thresholds must be strictly increasing, got {list(self.thresholds)}")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"{CONFIG_KEY}.thresholds must lie in [0, 1], got {list(self.thresholds)}")

    def guided(self, round_idx: int, reward_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Which prompts get a prefix in round `round_idx`, from the rewards of their earlier samples.

        reward_sum, count: [prompts] sums and numbers of rewards so far. Returns a [prompts] bool tensor.
        """
        if round_idx == 0:
            return torch.zeros_like(reward_sum, dtype=torch.bool)
        mean = reward_sum.float() / count.float().clamp(min=1)
        return mean < self.thresholds[round_idx - 1]


PRESETS: dict[str, GuidanceSchedule] = {
    # the paper's text
    "paper": GuidanceSchedule(),
    # the authors' code: the same micro-groups; counts 2/4, 4/6, 7/7 and level-1 ratio 0.25
    "official_code": GuidanceSchedule(prefix_ratios=(0.0, 0.25, 0.5, 1.0), thresholds=(2 / 4, 4 / 6, 7 / 7)),
}


def guidance_levels(guided: torch.Tensor) -> torch.Tensor:
    """Level per prompt from a [rounds, prompts] bool matrix: the last guided round, 0 if none."""
    rounds = torch.arange(guided.shape[0]).unsqueeze(-1).expand_as(guided)
    return torch.where(guided, rounds, torch.zeros_like(rounds)).max(0).values


# ---- the schedules of a run config (every engine builds them from the resolved config) ----------------------
def guidance_schedule(cfg) -> GuidanceSchedule:
    """The configured micro-group schedule (`method.guidance_schedule`): its `preset`, with any other field that is
    set replacing the preset's own."""
    g = cfg.method.guidance_schedule
    base = PRESETS[g.preset]
    return GuidanceSchedule(
        group_sizes=tuple(g.group_sizes) if g.get("group_sizes") is not None else base.group_sizes,
        prefix_ratios=tuple(g.prefix_ratios) if g.get("prefix_ratios") is not None else base.prefix_ratios,
        thresholds=tuple(g.thresholds) if g.get("thresholds") is not None else base.thresholds,
        dedupe_prefix_loss=bool(g.dedupe_prefix_loss),
    )


def rl_schedule(cfg) -> GuidanceSchedule:
    """The schedule of the RL phase: `guidance_schedule` for adaptive methods, else one round of train.group_size
    (GRPO; LUFFY mixes its reference into that round)."""
    if cfg.method.guidance == "adaptive":
        return guidance_schedule(cfg)
    return GuidanceSchedule((int(cfg.train.group_size),), (0.0,), ())
