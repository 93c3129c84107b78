"""The SFT step trains on the same token budget as every other method: reference solutions cut to the cap."""

from __future__ import annotations

from types import SimpleNamespace

from trapo.rl_step import sft_step
from trapo.rollout import Prompt


class RecordingEngine:
    def train_step(self, samples, **kw):
        self.samples, self.kw = list(samples), kw
        return {"loss": 0.0, "grad_norm": 0.0, "lr": 0.0, "finite": True}


def test_sft_step_cuts_reference_solutions_to_the_response_cap():
    eng = RecordingEngine()
    prompts = [Prompt([1, 2], list(range(10, 20)) + [0], [], "x"), Prompt([3], [10, 11, 0], [], "y")]
    sft_step(eng, prompts, SimpleNamespace(alpha=0.1), max_new_tokens=4)
    assert [s.expert_ids for s in eng.samples] == [[10, 11, 12, 13], [10, 11, 0]]
    assert eng.kw["normalizer"] == 7.0  # the token mean is over the tokens trained on
    assert eng.kw["prefix_loss"] == "sft" and all(not s.completion_ids for s in eng.samples)
