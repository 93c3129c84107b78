"""The order in which training prompts are drawn: one function for every engine.

A step's prompts are consecutive slices of a per-epoch permutation seeded by (seed, epoch), so the batches of any
step follow from (seed, step) and the data alone: a resumed run takes exactly the steps an uninterrupted one
would, and the OpenRLHF job (which reads its prompt file in order) trains on the local trainer's batches.
"""

from __future__ import annotations

import random
from functools import lru_cache


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A seed for one (seed, step) pair; `salt` separates the streams drawn at the same step."""
    return (seed * 1_000_003 + step * 7919 + salt) % (2**63 - 1)


@lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The training set's order in `epoch` (cached: every step of an epoch reads the same one)."""
    return tuple(random.Random(step_seed(seed, epoch, salt=1)).sample(range(n), n))


def step_prompt_indices(n: int, steps: int, per_step: int, seed: int, first_step: int = 0) -> list[int]:
    """Training-set indices of the prompts of `steps` steps from step `first_step` (0-based), `per_step` a step."""
    out = []
    for k in range(first_step * per_step, (first_step + steps) * per_step):
        epoch, pos = divmod(k, n)
        out.append(epoch_permutation(n, seed, epoch)[pos])
    return out
