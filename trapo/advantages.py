"""Group advantages (Dr.GRPO): A_j = r_j - mean of the rewards in the prompt's group, no std scaling."""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    in_baseline: torch.Tensor | None = None,
    scale_by_std: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Advantage of each sample against the mean reward of its group.

    rewards, group_ids: [n]. `in_baseline` ([n] bool) selects the samples that enter each group's mean:
    all of them by default (the paper's text), or only unguided ones (a variant in the authors' code).
    A group with no sample in the baseline uses all its samples. `scale_by_std` gives classic GRPO.
    """
    rewards = rewards.float()
    if in_baseline is None:
        in_baseline = torch.ones_like(rewards, dtype=torch.bool)
    _, idx = torch.unique(group_ids, return_inverse=True)
    n_groups = int(idx.max()) + 1 if idx.numel() else 0
    w = in_baseline.float()
    sums = torch.zeros(n_groups).index_add_(0, idx, rewards * w)
    counts = torch.zeros(n_groups).index_add_(0, idx, w)
    all_sums = torch.zeros(n_groups).index_add_(0, idx, rewards)
    all_counts = torch.zeros(n_groups).index_add_(0, idx, torch.ones_like(rewards))
    use_all = counts == 0
    mean = torch.where(use_all, all_sums / all_counts.clamp(min=1), sums / counts.clamp(min=1))
    adv = rewards - mean[idx]
    if scale_by_std:
        sq = torch.zeros(n_groups).index_add_(0, idx, (rewards - mean[idx]) ** 2)
        std = (sq / all_counts.clamp(min=1)).sqrt()
        adv = adv / (std[idx] + eps)
    return adv


def zero_signal_fraction(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Share of groups whose rewards are all equal (all 0 or all 1): they carry no RL signal."""
    _, idx = torch.unique(group_ids, return_inverse=True)
    n = int(idx.max()) + 1 if idx.numel() else 0
    if n == 0:
        return 0.0
    lo = torch.full((n,), float("inf")).scatter_reduce(0, idx, rewards.float(), "amin")
    hi = torch.full((n,), float("-inf")).scatter_reduce(0, idx, rewards.float(), "amax")
    return float((lo == hi).float().mean())
