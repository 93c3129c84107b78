"""The training prompts' order is one function (trapo.data.order) for the local trainer and the OpenRLHF job."""

from __future__ import annotations

import random

import pytest

from trapo.data import order


def test_one_function_for_every_engine():
    import trapo.trainer

    launch = pytest.importorskip("trapo.engines.openrlhf.launch")
    assert launch.step_prompt_indices is order.step_prompt_indices
    assert trapo.trainer.step_seed is order.step_seed


def test_steps_are_slices_of_seeded_epoch_permutations():
    n, per_step, seed = 10, 4, 3
    idx = order.step_prompt_indices(n, 6, per_step, seed)
    perms = [random.Random(order.step_seed(seed, e, salt=1)).sample(range(n), n) for e in range(3)]
    assert idx == (perms[0] + perms[1] + perms[2])[:24]
    assert order.step_prompt_indices(n, 2, per_step, seed, first_step=3) == idx[12:20]  # resume mid-epoch
    assert sorted(idx[:10]) == list(range(n))  # each epoch visits every prompt once
