import pytest
import torch

from trapo.advantages import group_advantages, zero_signal_fraction


def test_dr_grpo_advantage_is_reward_minus_group_mean():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    a = group_advantages(r, g)
    torch.testing.assert_close(a, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0]))


def test_baseline_over_unguided_only():
    # group of 4: two unguided (0, 0), two guided (1, 1)
    r = torch.tensor([0.0, 0.0, 1.0, 1.0])
    g = torch.zeros(4, dtype=torch.long)
    all_in = group_advantages(r, g)
    unguided = group_advantages(r, g, in_baseline=torch.tensor([True, True, False, False]))
    torch.testing.assert_close(all_in, torch.tensor([-0.5, -0.5, 0.5, 0.5]))
    torch.testing.assert_close(unguided, torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_group_without_baseline_members_uses_all():
    r = torch.tensor([1.0, 0.0])
    a = group_advantages(r, torch.tensor([5, 5]), in_baseline=torch.tensor([False, False]))
    torch.testing.assert_close(a, torch.tensor([0.5, -0.5]))


def test_std_scaling_gives_grpo():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    a = group_advantages(r, torch.zeros(4, dtype=torch.long), scale_by_std=True)
    std = torch.tensor([0.75, -0.25, -0.25, -0.25]).pow(2).mean().sqrt()
    torch.testing.assert_close(a, torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-6))


def test_zero_signal_fraction():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    assert zero_signal_fraction(r, g) == pytest.approx(2 / 3)
