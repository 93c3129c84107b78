import pytest
import torch

from trapo.guidance import PRESETS, GuidanceSchedule, guidance_levels


def decide(schedule, round_idx, rewards_so_far):
    s = torch.tensor([sum(r) for r in rewards_so_far], dtype=torch.float)
    c = torch.tensor([len(r) for r in rewards_so_far], dtype=torch.float)
    return schedule.guided(round_idx, s, c).tolist()


def test_paper_preset_values():
    p = PRESETS["paper"]
    assert p.group_sizes == (4, 2, 1, 1) and p.group_size == 8
    assert p.prefix_ratios == (0.0, 0.2, 0.5, 1.0)
    assert p.thresholds == (0.5, 0.7, 0.9)
    oc = PRESETS["official_code"]
    assert oc.prefix_ratios[1] == 0.25
    assert oc.thresholds == pytest.approx((0.5, 4 / 6, 1.0))


def test_round_zero_never_guided():
    assert decide(PRESETS["paper"], 0, [[], []]) == [False, False]


def test_round_one_threshold_half():
    p = PRESETS["paper"]
    # 1/4 correct (0.25 < 0.5) -> guided; 2/4 (0.5, not below) -> not guided
    assert decide(p, 1, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]) == [True, False, True]


def test_round_two_and_three_thresholds():
    p = PRESETS["paper"]
    # after 6 samples: 4/6 = 0.667 < 0.7 -> guided ; 5/6 = 0.833 -> not
    assert decide(p, 2, [[1, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 0]]) == [True, False]
    # after 7 samples: 6/7 = 0.857 < 0.9 -> guided ; 7/7 -> not
    assert decide(p, 3, [[1] * 6 + [0], [1] * 7]) == [True, False]


def test_official_code_counts():
    oc = PRESETS["official_code"]
    # 7/7 threshold: guided unless all seven correct
    assert decide(oc, 3, [[1] * 6 + [0], [1] * 7]) == [True, False]
    # 4/6: 3 correct of 6 -> guided, 4 -> not
    assert decide(oc, 2, [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]) == [True, False]


def test_levels_are_last_guided_round():
    guided = torch.tensor([[False, False, False], [True, False, True], [True, False, False], [False, False, True]])
    assert guidance_levels(guided).tolist() == [2, 0, 3]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(thresholds=(0.7, 0.5, 0.9)), "increasing"),
        (dict(group_sizes=(4, 2, 1)), "one ratio per micro-group"),
        (dict(prefix_ratios=(0.1, 0.2, 0.5, 1.0)), "never guided"),
        (dict(thresholds=(0.5, 0.7)), "one threshold"),
        (dict(group_sizes=(4, 0, 2, 2)), "positive"),
    ],
)
def test_invalid_schedules_rejected(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        GuidanceSchedule(**kwargs)
