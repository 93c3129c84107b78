"""TRAPO's rollout agent inside OpenRLHF, with a fake generation back end in place of vLLM.

Three prompts go through `AgentExecutor.execute` the way OpenRLHF's vLLM engine calls it (n concurrent
calls per prompt sharing one SamplingParams); the responses go through OpenRLHF's own
`_process_response_into_experience`. Checked: which prompts get which prefix in each round, the tokens
sent to the generator, the action / expert / RL masks, group ids, advantages, levels.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import torch

from openrlhf_support import compose, openrlhf_modules, require_openrlhf

require_openrlhf()
pytestmark = pytest.mark.openrlhf

agent_mod, actor_mod, sg_mod, exp_mod, vllm = openrlhf_modules(
    "trapo.engines.openrlhf.agent", "trapo.engines.openrlhf.actor",
    "openrlhf.trainer.ppo_utils.samples_generator", "openrlhf.trainer.ppo_utils.experience", "vllm")

from trapo.data.synthetic import make_split  # noqa: E402
from trapo.models.tiny import PROMPT_TEMPLATE, build_char_tokenizer  # noqa: E402
from trapo.prefix import cut_index  # noqa: E402
from evaluation.prompts import build_prompt  # noqa: E402
from trapo.rewards import last_boxed  # noqa: E402

MAX_NEW = 160  # the response cap (prefix + completion): room for the whole 3-4-step solutions and an answer
MAX_LEN = 400


class FakeEngine:
    """Stands in for OpenRLHF's RolloutRayActor: `generate(token_ids, sampling_params)` like vLLM's output.

    The completion is decided by `policy(prompt_index, has_prefix, call_number)` -> answer string.
    """

    def __init__(self, tokenizer, prompts_ids, policy):
        self.tok, self.prompts_ids, self.policy = tokenizer, prompts_ids, policy
        self.calls: list[tuple[int, list[int]]] = []
        self.caps: list[tuple[int, int]] = []  # (prefix length, max_tokens) of each call
        self.count = [0] * len(prompts_ids)

    def _which(self, ids):
        for i, p in enumerate(self.prompts_ids):
            if ids[: len(p)] == p:
                return i
        raise AssertionError("unknown prompt")

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        ids = list(prompt_token_ids)
        i = self._which(ids)
        self.calls.append((i, ids))
        self.caps.append((len(ids) - len(self.prompts_ids[i]), sampling_params.max_tokens))
        n = self.count[i]
        self.count[i] += 1
        await asyncio.sleep(0)
        text = f"\n\n\\boxed{{{self.policy(i, len(ids) > len(self.prompts_ids[i]), n)}}}"
        out = self.tok(text, add_special_tokens=False).input_ids + [self.tok.eos_token_id]
        out = out[: sampling_params.max_tokens]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=out, text="", finish_reason="stop", logprobs=None)])


@pytest.fixture(scope="module")
def rolled():
    cfg = compose("engine=openrlhf", "preset=smoke", "method=trapo")
    tok = build_char_tokenizer()
    problems = make_split(3, 3, 4, seed=7)
    texts = [build_prompt(p.question, tok, PROMPT_TEMPLATE) for p in problems]
    prompts_ids = [tok(t, add_special_tokens=False).input_ids for t in texts]

    def policy(i, guided, n):
        gold = problems[i].answer
        if i == 0:
            return "-1"  # always wrong: guided in every round, level 3
        if i == 1:
            return gold  # always right: never guided, level 0
        # half right without a prefix, always right with one: 2/4 >= 0.5, then 3/6 < 0.7 -> guided from round 2
        return gold if (guided or n % 2 == 1) else "-1"

    engine = FakeEngine(tok, prompts_ids, policy)
    ex = agent_mod.AgentExecutor(cfg=cfg)

    async def go():
        jobs = []
        for text, p in zip(texts, problems):
            sp = vllm.SamplingParams(temperature=1.0, max_tokens=MAX_NEW)  # one object per prompt, as OpenRLHF
            label = agent_mod.encode_label(p.answer, p.solution)
            jobs += [ex.execute(text, label, sp, MAX_LEN, tok, engine) for _ in range(int(cfg.train.group_size))]
        return await asyncio.gather(*jobs)

    responses = asyncio.run(go())
    g = int(cfg.train.group_size)
    groups = [responses[i * g:(i + 1) * g] for i in range(len(problems))]
    fake_gen = SimpleNamespace(args=None)
    exps = [[sg_mod.SamplesGenerator._process_response_into_experience(fake_gen, r, max_len=MAX_LEN) for r in grp]
            for grp in groups]
    sols = [agent_mod.tokenize_prompt(tok, t, p.solution, p.answer) for t, p in zip(texts, problems)]
    return SimpleNamespace(cfg=cfg, tok=tok, problems=problems, prompts_ids=prompts_ids, engine=engine,
                           groups=groups, exps=exps, sols=sols, schedule=ex.schedule)


def test_rounds_prefixes_and_generator_inputs(rolled):
    sched = rolled.schedule
    assert sched.group_sizes == (4, 2, 1, 1) and sched.prefix_ratios == (0.0, 0.2, 0.5, 1.0)
    expected_guided = {0: [False, True, True, True], 1: [False, False, False, False], 2: [False, False, True, True]}
    expected_level = {0: 3, 1: 0, 2: 3}
    for i, grp in enumerate(rolled.groups):
        sol = rolled.sols[i]
        rounds = [int(r["extra_logs"]["trapo_round"]) for r in grp]
        assert rounds == [0, 0, 0, 0, 1, 1, 2, 3]
        for r in grp:
            rnd = int(r["extra_logs"]["trapo_round"])
            plen = int(r["extra_logs"]["trapo_prefix_len"])
            want = min(cut_index(len(sol.solution_ids), sched.prefix_ratios[rnd], sol.solution_breaks), MAX_NEW) \
                if expected_guided[i][rnd] else 0
            assert plen == want, (i, rnd)
            toks = r["observation_tokens"]
            start, end = r["action_ranges"][0]
            assert toks[:start] == rolled.prompts_ids[i]  # the prompt is never trained on
            assert toks[start:start + plen] == sol.solution_ids[:plen]  # the expert prefix follows the prompt
            assert end == len(toks)
            assert r["extra_logs"]["trapo_level"] == expected_level[i]
            assert bool(r["extra_logs"]["trapo_guided"]) == (plen > 0)
    # the generator saw prompt + prefix for guided samples and nothing for the whole-solution round
    calls = {i: [ids for j, ids in rolled.engine.calls if j == i] for i in range(3)}
    assert len(calls[1]) == 8 and all(ids == rolled.prompts_ids[1] for ids in calls[1])
    assert len(calls[0]) == 7  # round 3 gives the whole solution: nothing is generated
    sol0 = rolled.sols[0]
    k1 = cut_index(len(sol0.solution_ids), 0.2, sol0.solution_breaks)
    assert sum(ids == rolled.prompts_ids[0] + sol0.solution_ids[:k1] for ids in calls[0]) == 2
    # each request may generate what its prefix leaves of the response (prefix + completion <= max_tokens)
    assert all(cap == MAX_NEW - plen for plen, cap in rolled.engine.caps)
    assert {plen for plen, _ in rolled.engine.caps} >= {0, k1}
    level3 = rolled.groups[0][-1]
    assert level3["extra_logs"]["trapo_completion_len"] == 0
    assert level3["reward"] == 1.0  # prefix (the whole solution) + completion is graded together


def test_masks_group_ids_advantages_from_openrlhf_experiences(rolled):
    ids = []
    for i, (grp, exps) in enumerate(zip(rolled.groups, rolled.exps)):
        rewards = torch.tensor([r["reward"] for r in grp])
        adv = torch.tensor([e.info["trapo_advantage"].item() for e in exps])
        assert torch.allclose(adv, rewards - rewards.mean(), atol=1e-6)  # Dr.GRPO, guided samples in the baseline
        gids = {e.info["trapo_group"].item() for e in exps}
        assert len(gids) == 1
        ids += list(gids)
        for r, e in zip(grp, exps):
            plen = int(r["extra_logs"]["trapo_prefix_len"])
            comp = int(r["extra_logs"]["trapo_completion_len"])
            start = r["action_ranges"][0][0]
            am = e.action_mask[0]
            # OpenRLHF's action_mask[t] is about token t+1: the prefix and the completion, nothing else
            assert am.sum().item() == plen + comp
            assert am[: start - 1].sum().item() == 0
            expert, rl = actor_mod.trapo_masks(e.action_mask, e.info["trapo_prefix_len"])
            pos = torch.nonzero(expert[0]).flatten() + 1
            assert pos.tolist() == list(range(start, start + plen))
            assert torch.nonzero(rl[0]).flatten().add(1).tolist() == list(range(start + plen, start + plen + comp))
        # dedupe: of a guided micro-group of two, only the first carries the prefix loss
        w = [r["extra_logs"]["trapo_prefix_weight"] for r in grp]
        if grp[4]["extra_logs"]["trapo_guided"]:
            assert w[4:6] == [1.0, 0.0]
    assert len(set(ids)) == 3  # one group id per prompt
    zero = [grp[0]["extra_logs"]["trapo_zero_signal"] for grp in rolled.groups]
    assert zero == [0.0, 1.0, 0.0]  # prompt 1: all rewards 1, no RL signal


def test_rewards_use_the_graded_prefix_plus_completion(rolled):
    tok = rolled.tok
    for i, grp in enumerate(rolled.groups):
        gold = rolled.problems[i].answer
        for r in grp:
            start = r["action_ranges"][0][0]
            text = tok.decode(r["observation_tokens"][start:], skip_special_tokens=True)
            assert r["reward"] == float(last_boxed(text) == gold)


def test_label_round_trip_and_plain_labels():
    lab = agent_mod.encode_label("98", "a\n\nb")
    assert agent_mod.decode_label(lab) == {"answer": "98", "solution": "a\n\nb"}
    assert agent_mod.decode_label("42") == {"answer": "42", "solution": None}


def test_every_prompt_of_a_step_starts_its_first_round_before_any_second_round():
    """128 prompts on one engine: each prompt's group holds an agent thread for all its rounds, so the pool must
    hold the whole step -- with fewer threads, the prompts beyond it start only after whole groups finish."""
    n = 128
    cfg = compose("engine=openrlhf", "preset=smoke", "method=trapo", f"train.prompts_per_step={n}",
                  "engine.vllm_num_engines=1")
    tok = build_char_tokenizer()
    problems = make_split(n, 1, 2, seed=3)
    firsts = asyncio.Event()  # every prompt's first generation call has arrived
    order: list[tuple[int, int]] = []  # (prompt, its call number) in the order generation calls arrive
    calls = [0] * n

    class Engine:
        async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
            i = sampling_params.prompt  # each prompt's SamplingParams (deep-copied per call) names it
            order.append((i, calls[i]))
            calls[i] += 1
            if len({j for j, c in order if c == 0}) == n:
                firsts.set()
            try:  # hold every call until all first rounds have started (or a while: the old pool never gets there)
                await asyncio.wait_for(firsts.wait(), timeout=5.0)
            except asyncio.TimeoutError:
                pass
            out = tok("\n\n\\boxed{-1}", add_special_tokens=False).input_ids + [tok.eos_token_id]
            return SimpleNamespace(outputs=[SimpleNamespace(token_ids=out[: sampling_params.max_tokens])])

    ex = agent_mod.AgentExecutor(cfg=cfg, reward_fn=lambda texts, golds: [0.0] * len(texts))
    engine = Engine()

    async def go():
        jobs = []
        for i, p in enumerate(problems):
            sp = SimpleNamespace(max_tokens=MAX_NEW, prompt=i)  # one object per prompt, as OpenRLHF's
            text = build_prompt(p.question, tok, PROMPT_TEMPLATE)
            label = agent_mod.encode_label(p.answer, p.solution)
            jobs += [ex.execute(text, label, sp, MAX_LEN, tok, engine) for _ in range(int(cfg.train.group_size))]
        return await asyncio.gather(*jobs)

    responses = asyncio.run(go())
    assert len(responses) == n * int(cfg.train.group_size)
    second_round = next(k for k, (_, c) in enumerate(order) if c == 4)  # calls 0-3 are a prompt's first round
    late = sorted({i for i, c in order[second_round:] if c == 0})
    assert not late, f"{len(late)} prompts started their first round after a second round had begun"
