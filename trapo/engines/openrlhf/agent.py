"""TRAPO's rollout inside OpenRLHF's vLLM engines (`--train.agent_func_path` points at this file).

OpenRLHF sends each prompt's n samples to one vLLM engine, which calls `AgentExecutor.execute` n times
concurrently with one shared `sampling_params` object (`RolloutRayActor.generate_responses`, OpenRLHF
0.11.2; `patches.TARGETS` pins it). The first of these calls runs the prompt's whole micro-group
rollout with `trapo.rollout.rollout` -- rounds (4, 2, 1, 1), expert prefixes appended to the prompt
tokens before generation, the guidance decision between rounds from the rewards of earlier rounds --
and every call then returns one sample of that group.

Each sample goes back to OpenRLHF as one response: tokens prompt + prefix + completion, one action
range covering prefix + completion (so the actor gets log-probs for both), the reward (the project's
grader on prefix + completion), and per-sample scalars in `extra_logs`, which OpenRLHF keeps in
`Experience.info` through every concat/split:

    trapo_prefix_len     expert tokens at the start of the action range (TrSFT, not RL)
    trapo_prefix_weight  1, or 0 for a duplicated prefix (each prefix carries the loss once)
    trapo_prefix_scale   1, or the advantage for LUFFY's off-policy reference sample (trapo.rl_step.expert_scale)
    trapo_advantage      Dr.GRPO advantage (trapo.rl_step.collect_rollouts, over the group)
    trapo_group          id of the prompt's group (unique within a step)
    trapo_round          micro-group index of the sample
    trapo_level          guidance level of the prompt (0-3)
    trapo_guided         1 if the sample has a prefix
    trapo_completion_len tokens the policy generated
    trapo_zero_signal    1 if all rewards of the group are equal (no RL signal)

The pure functions (`encode_label`, `run_group`; prompts are `trapo.rollout.tokenize_prompt`'s, as the local
trainer's, from the prompt text the launcher formatted with `evaluation.prompts.build_prompt`) hold all of this
and are tested with a fake generation back end in place of vLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from typing import Any, Callable

from trapo import advantages as adv_lib
from trapo.guidance import GuidanceSchedule
from trapo.rl_step import collect_rollouts, expert_scale
from trapo.rollout import Prompt, Sample, tokenize_prompt  # noqa: F401  (tokenize_prompt: the trainer's prompts)

try:  # OpenRLHF checks that AgentExecutor subclasses its base; the pure functions work without it
    from openrlhf.utils.agent import AgentExecutorBase
except ImportError:  # pragma: no cover - only when OpenRLHF is not installed
    AgentExecutorBase = object

LABEL_KEYS = ("answer", "solution")


# ---- data ---------------------------------------------------------------------------------------
def encode_label(answer: str, solution: str | None, row: int | None = None) -> str:
    """The dataset's `label` column: gold answer and reference solution (and the prompt file's row), as one JSON
    string. OpenRLHF hands the label to the agent and keeps it in `Experience.labels` up to the actor's step."""
    obj = {"answer": str(answer), "solution": solution}
    if row is not None:
        obj["row"] = int(row)
    return json.dumps(obj, ensure_ascii=False)


def decode_label(label: Any) -> dict:
    """Inverse of `encode_label`; a plain string label is a gold answer without a reference solution."""
    if isinstance(label, dict):
        return {"answer": str(label.get("answer", "")), "solution": label.get("solution")}
    if isinstance(label, str):
        try:
            obj = json.loads(label)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "answer" in obj:
            return {"answer": str(obj["answer"]), "solution": obj.get("solution")}
        return {"answer": label, "solution": None}
    return {"answer": str(label), "solution": None}


# ---- one prompt's group ---------------------------------------------------------------------------
def sample_response(s: Sample, *, prompt_text: str, label: Any, level: int, group_id: int, zero_signal: bool,
                    max_new_tokens: int | None) -> dict:
    """One sample in the shape of OpenRLHF's agent responses (`AgentExecutorBase.execute`)."""
    tokens = list(s.prompt_ids) + list(s.expert_ids) + list(s.completion_ids)
    start = len(s.prompt_ids)
    return {
        "prompt": prompt_text,
        "label": label,
        "images": None,
        "mm_train_inputs": None,
        "observation_tokens": tokens,
        "action_ranges": [(start, len(tokens))],
        "rollout_log_probs": None,
        "truncated": bool(max_new_tokens is not None and len(s.expert_ids) + len(s.completion_ids) >= max_new_tokens),
        "reward": float(s.reward),
        "scores": float(s.reward),
        "extra_logs": {
            "trapo_prefix_len": float(len(s.expert_ids)),
            "trapo_prefix_weight": float(s.expert_weight),
            "trapo_prefix_scale": float(expert_scale(s)),
            "trapo_advantage": float(s.advantage),
            "trapo_group": float(group_id),
            "trapo_round": float(s.round),
            "trapo_level": float(level),
            "trapo_guided": float(s.guided),
            "trapo_completion_len": float(len(s.completion_ids)),
            "trapo_zero_signal": float(zero_signal),
        },
    }


def run_group(prompt: Prompt, cfg, schedule: GuidanceSchedule,
              generate: Callable[[list[list[int]], list[int]], list[list[int]]],
              decode: Callable[[list[int]], str], reward_fn, *, prompt_text: str, label: Any, group_id: int,
              max_new_tokens: int | None = None) -> list[dict]:
    """All G samples of one prompt, in rollout order, as OpenRLHF responses.

    The rounds, prefixes, rewards and advantages come from `trapo.rl_step.collect_rollouts`, with the method's
    switches: the local trainer's call.
    """
    cap = int(cfg.rollout.max_new_tokens) if max_new_tokens is None else int(max_new_tokens)
    ro = collect_rollouts([prompt], schedule, cfg.method, generate=generate, decode=decode, reward_fn=reward_fn,
                          max_new_tokens=cap)
    zero = adv_lib.zero_signal_fraction(ro.rewards, ro.groups) == 1.0
    return [sample_response(s, prompt_text=prompt_text, label=label, level=int(ro.levels[0]), group_id=group_id,
                            zero_signal=zero, max_new_tokens=max_new_tokens) for s in ro.samples]


# ---- the OpenRLHF hook ------------------------------------------------------------------------------
class _Group:
    def __init__(self, sampling_params, size: int):
        self.sampling_params = sampling_params  # held so its id() stays unique while the group lives
        self.size = size
        self.claimed = 0
        self.task: asyncio.Future | None = None


def pool_size(cfg) -> int:
    """Threads of an engine's agent: engine.agent_workers, else one per prompt of a step.

    A prompt's group holds its thread for all its rounds (it waits on vLLM between them), so with fewer threads
    than the prompts an engine holds, the rest start their first round only after whole groups have finished.
    OpenRLHF spreads a step's prompts over the engines by their pending requests (about prompts / engines each);
    a pool of the whole step leaves no prompt queued whatever the spread, and an idle thread costs nothing."""
    n = cfg.engine.get("agent_workers")
    return int(n) if n else int(cfg.train.prompts_per_step)


class AgentExecutor(AgentExecutorBase):
    """Loaded by OpenRLHF in every vLLM engine (`_load_agent_executor`), one instance per engine."""

    def __init__(self, cfg=None, reward_fn=None, max_workers: int | None = None):
        from trapo.guidance import rl_schedule
        from trapo.engines.openrlhf.settings import config_from_env

        self.cfg = cfg if cfg is not None else config_from_env()
        self.schedule = rl_schedule(self.cfg)
        self._reward_fn = reward_fn
        workers = max_workers or pool_size(self.cfg)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trapo-agent")
        self._groups: dict[int, _Group] = {}
        self._ids = itertools.count()
        self._pid_part = (os.getpid() % 1024) * 16384  # group ids unique across engines, exact in float32

    @property
    def reward_fn(self):
        if self._reward_fn is None:
            from trapo.rewards import build_reward

            self._reward_fn = build_reward(self.cfg.data.reward)
        return self._reward_fn

    async def _generate(self, llm_engine, inputs: list[list[int]], max_new: list[int] | None, sampling_params,
                        max_length: int) -> list[list[int]]:
        async def one(ids: list[int], cap: int | None) -> list[int]:
            sp = deepcopy(sampling_params)
            budget = max_length - len(ids) if cap is None else min(cap, max_length - len(ids))
            if sp.max_tokens is None or sp.max_tokens > budget:
                sp.max_tokens = budget
            if sp.max_tokens <= 0:
                return []
            out = await llm_engine.generate(list(ids), sp)
            return list(out.outputs[0].token_ids)

        caps = max_new if max_new is not None else [None] * len(inputs)
        return list(await asyncio.gather(*(one(x, c) for x, c in zip(inputs, caps, strict=True))))

    async def _run(self, prompt_text, label, sampling_params, max_length, hf_tokenizer, llm_engine) -> list[dict]:
        loop = asyncio.get_running_loop()
        gold = decode_label(label)
        sampling_params = self._step_seeded(sampling_params, label)

        def generate(inputs: list[list[int]], max_new: list[int]) -> list[list[int]]:  # runs in a worker thread
            fut = asyncio.run_coroutine_threadsafe(
                self._generate(llm_engine, inputs, max_new, sampling_params, max_length), loop)
            return fut.result()

        def work() -> list[dict]:
            prompt = tokenize_prompt(hf_tokenizer, prompt_text, gold["solution"], gold["answer"])
            group_id = self._pid_part + next(self._ids) % 16384
            return run_group(prompt, self.cfg, self.schedule, generate,
                             lambda ids: hf_tokenizer.decode(ids, skip_special_tokens=True), self.reward_fn,
                             prompt_text=prompt_text, label=label, group_id=group_id,
                             max_new_tokens=sampling_params.max_tokens)

        return await loop.run_in_executor(self._pool, work)

    def _step_seeded(self, sampling_params, label):
        """engine.rollout=cpu: the group's requests carry the local trainer's rollout seed of the prompt's step
        (`trapo.data.order.step_seed(seed, step, salt=2)`, the step from the prompt file's row), and the CPU engine
        samples each seed's requests from one generator of that seed (cpu_rollout.CpuLLM): with one prompt per step
        the samples are the local engine's. On vLLM a per-request seed would make a group's identical requests
        identical, so its sampling is left as it is."""
        if str(self.cfg.engine.get("rollout", "vllm")) != "cpu":
            return sampling_params
        try:
            row = json.loads(label).get("row") if isinstance(label, str) else None
        except json.JSONDecodeError:
            row = None
        if row is None:
            return sampling_params
        from trapo.data.order import step_seed

        step = int(self.cfg.engine.first_step) + int(row) // int(self.cfg.train.prompts_per_step)
        sp = deepcopy(sampling_params)
        sp.seed = step_seed(int(self.cfg.seed), step, salt=2)
        return sp

    async def _plain(self, prompt_text, label, sampling_params, max_length, hf_tokenizer, llm_engine) -> dict:
        """A prompt without a reference solution (e.g. OpenRLHF's evaluation): one unguided sample."""
        ids = hf_tokenizer(prompt_text, add_special_tokens=False).input_ids
        out = (await self._generate(llm_engine, [ids], None, sampling_params, max_length))[0]
        gold = decode_label(label)
        loop = asyncio.get_running_loop()
        text = hf_tokenizer.decode(out, skip_special_tokens=True)
        reward = (await loop.run_in_executor(self._pool, self.reward_fn, [text], [gold["answer"]]))[0]
        s = Sample(0, 0, list(ids), [], out, reward=float(reward))
        return sample_response(s, prompt_text=prompt_text, label=label, level=0, group_id=-1, zero_signal=False,
                               max_new_tokens=sampling_params.max_tokens)

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer, llm_engine, images=None):
        if images:
            raise ValueError("TRAPO's rollout is text-only")
        if not decode_label(label)["solution"]:
            return await self._plain(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine)
        key = id(sampling_params)  # one object per `generate_responses` call, shared by its n executes
        grp = self._groups.get(key)
        if grp is None:
            grp = self._groups[key] = _Group(sampling_params, self.schedule.group_size)
            grp.task = asyncio.ensure_future(
                self._run(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine))
        slot = grp.claimed
        grp.claimed += 1
        if grp.claimed >= grp.size:
            self._groups.pop(key, None)
        if slot >= grp.size:
            raise RuntimeError(f"more than guidance group size {grp.size} samples requested for one prompt: set "
                               f"--rollout.n_samples_per_prompt to train.group_size")
        responses = await asyncio.shield(grp.task)
        return responses[slot]

