"""Micro-group rounds with a fake generator: who gets which prefix, when, and what gets trained."""

import torch

from trapo.guidance import PRESETS, GuidanceSchedule
from trapo.rollout import Prompt, rollout

EOS = 0


def make_prompt(pid: int, gold: str) -> Prompt:
    # solution of 10 tokens + EOS, paragraph breaks ending after tokens 3 and 6
    sol = [100 + pid * 20 + i for i in range(10)] + [EOS]
    return Prompt([pid + 1, 50], sol, [3, 6], gold)


class FakeModel:
    """Answers correctly ("<ok>") only for the prompts in `solves`, or when given a prefix if `prefix_helps`."""

    def __init__(self, solves=(), prefix_helps=False):
        self.solves, self.prefix_helps, self.calls, self.budgets = set(solves), prefix_helps, [], []

    def generate(self, inputs, max_new):
        self.calls.append([list(x) for x in inputs])
        self.budgets.append(list(max_new))
        return [[7, 8, 9, EOS] for _ in inputs]

    def decode(self, ids):
        return " ".join(map(str, ids))

    def reward(self, texts, golds):
        out = []
        for t, g in zip(texts, golds):
            pid = int(g)
            has_prefix = str(100 + pid * 20) in t.split()
            out.append(1.0 if pid in self.solves or (self.prefix_helps and has_prefix) else 0.0)
        return out


def run(model, prompts, schedule=PRESETS["paper"], max_response_tokens=64, **kw):
    return rollout(prompts, schedule, model.generate, model.decode, model.reward,
                   max_response_tokens=max_response_tokens, **kw)


def test_unsolved_prompt_climbs_all_levels_solved_prompt_stays_unguided():
    prompts = [make_prompt(0, "0"), make_prompt(1, "1")]
    model = FakeModel(solves={1})
    samples, levels = run(model, prompts)
    assert len(samples) == 16
    assert levels.tolist() == [3, 0]
    by = {(s.group, s.round): [] for s in samples}
    for s in samples:
        by[(s.group, s.round)].append(s)
    # prompt 0: round sizes 4,2,1,1 with prefixes of 0, cut(11, .2)=snap(2 -> 3), cut(11,.5)=snap(5 -> 6), all
    assert [len(x.expert_ids) for x in by[(0, 0)]] == [0, 0, 0, 0]
    assert [len(x.expert_ids) for x in by[(0, 1)]] == [3, 3]
    assert [len(x.expert_ids) for x in by[(0, 2)]] == [6]
    assert [len(x.expert_ids) for x in by[(0, 3)]] == [11]
    # prompt 1 is solved: never guided
    assert all(not s.guided for s in samples if s.group == 1)
    # the whole-solution sample generates nothing; every other one was generated from prompt + prefix
    full = by[(0, 3)][0]
    assert full.completion_ids == [] and full.expert_ids[-1] == EOS
    flat_inputs = [x for call in model.calls for x in call]
    assert prompts[0].prompt_ids + prompts[0].solution_ids[:3] in flat_inputs
    assert prompts[0].prompt_ids + prompts[0].solution_ids[:6] in flat_inputs
    assert prompts[0].prompt_ids + prompts[0].solution_ids not in flat_inputs


def test_rounds_are_batched_across_prompts():
    prompts = [make_prompt(i, str(i)) for i in range(3)]
    model = FakeModel()
    run(model, prompts)
    # one generate call per round that has something to generate: 4 calls, the last one empty -> 3
    assert [len(c) for c in model.calls] == [12, 6, 3]


def test_prefix_loss_dedupe_within_a_micro_group():
    samples, _ = run(FakeModel(), [make_prompt(0, "0")])
    r1 = [s for s in samples if s.round == 1]
    assert [s.expert_weight for s in r1] == [1.0, 0.0]
    nodedupe = GuidanceSchedule(dedupe_prefix_loss=False)
    samples, _ = run(FakeModel(), [make_prompt(0, "0")], schedule=nodedupe)
    assert [s.expert_weight for s in samples if s.round == 1] == [1.0, 1.0]


def test_guidance_stops_once_prefixes_make_it_correct():
    # with a prefix the model is right: round 1 (2 samples right) -> mean 2/6 < .7 -> round 2 guided -> 3/7 < .9
    samples, levels = run(FakeModel(prefix_helps=True), [make_prompt(0, "0")])
    assert levels.tolist() == [3]
    # right 3 of 4 unguided, then always right: 3/4 >= .5 and 5/6 >= .7 skip levels 1-2, but 6/7 < .9 guides
    # round 3 (the whole solution); right 4 of 4 is never guided
    class Partly(FakeModel):
        def __init__(self, first):
            super().__init__()
            self.first = first

        def reward(self, texts, golds):
            return self.first if len(texts) == 4 else [1.0] * len(texts)

    samples, levels = run(Partly([1.0, 1.0, 1.0, 0.0]), [make_prompt(0, "0")])
    assert levels.tolist() == [3]
    assert [s.round for s in samples if s.guided] == [3]
    samples, levels = run(Partly([1.0] * 4), [make_prompt(0, "0")])
    assert levels.tolist() == [0] and not any(s.guided for s in samples)


def test_not_adaptive_means_no_prefix():
    samples, levels = run(FakeModel(), [make_prompt(0, "0")], schedule=GuidanceSchedule((8,), (0.0,), ()),
                          adaptive=False)
    assert len(samples) == 8 and not any(s.guided for s in samples) and levels.tolist() == [0]


def test_luffy_off_policy_member():
    sched = GuidanceSchedule((8,), (0.0,), ())
    samples, _ = run(FakeModel(), [make_prompt(0, "0"), make_prompt(1, "1")], schedule=sched, adaptive=False,
                     off_policy_reference=True)
    off = [s for s in samples if s.off_policy]
    assert len(off) == 2 and {s.group for s in off} == {0, 1}
    assert all(s.expert_ids == make_prompt(s.group, "").solution_ids and s.completion_ids == [] for s in off)


def test_response_cap_covers_prefix_and_completion():
    """As in the authors' code, prefix + completion is cut to the response length (here 5 tokens)."""
    model = FakeModel()
    samples, levels = run(model, [make_prompt(0, "0")], max_response_tokens=5)
    assert levels.tolist() == [3]
    by_round = {r: [s for s in samples if s.round == r] for r in range(4)}
    # round 0: no prefix, the whole budget; round 1: prefix 3 leaves 2; round 2: prefix snaps to 6 > 5 -> cut
    # to 5 and nothing left to generate; round 3: the solution (11 tokens) cut to 5
    assert model.budgets == [[5] * 4, [2, 2]]
    assert [len(s.expert_ids) for s in by_round[1]] == [3, 3]
    assert all(len(s.completion_ids) == 2 for s in by_round[1])  # the fake's 4 tokens cut to the budget
    assert [len(s.expert_ids) for s in by_round[2] + by_round[3]] == [5, 5]
    assert all(s.completion_ids == [] for s in by_round[2] + by_round[3])
    assert all(len(s.expert_ids) + len(s.completion_ids) <= 5 for s in samples)
    # with room for everything, the prefix keeps its snapped length and the completion its own budget
    model = FakeModel()
    samples, _ = run(model, [make_prompt(0, "0")], max_response_tokens=64)
    assert model.budgets == [[64] * 4, [61, 61], [58]]


def test_bad_response_cap():
    import pytest

    with pytest.raises(ValueError, match="max_response_tokens"):
        run(FakeModel(), [make_prompt(0, "0")], max_response_tokens=0)


def test_a_guided_round_whose_cut_is_empty_still_counts_as_guided():
    """A 1-token solution (+ EOS) at prefix ratio 0.2 cuts 0 tokens: the round gave guidance all the same, so its
    samples are guided ones (out of the unguided reward and length metrics, and out of the baseline when guided
    samples are excluded from it)."""
    from types import SimpleNamespace

    from trapo.rl_step import set_advantages

    prompt = Prompt([1, 50], [101, EOS], [], "0")
    samples, levels = run(FakeModel(), [prompt])
    by_round = {r: [s for s in samples if s.round == r] for r in range(4)}
    assert [len(s.expert_ids) for s in by_round[1]] == [0, 0]  # the cut is empty...
    assert all(s.guided for r in (1, 2, 3) for s in by_round[r])  # ...but the round was guided
    assert not any(s.guided for s in by_round[0]) and levels.tolist() == [3]
    for s in by_round[1]:
        s.reward = 1.0  # only the guided round's samples are right
    method = SimpleNamespace(baseline_includes_guided=False, scale_by_std=False)
    set_advantages(samples, method)
    assert all(s.advantage == 0.0 for s in by_round[0])  # baseline over unguided samples only: 0
