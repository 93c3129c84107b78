"""Micro-group rollouts with adaptive expert prefixes, independent of any engine.

An engine supplies `generate(inputs, max_new) -> completions` (token ids in, token ids out, batched across all
prompts of a round; `max_new[i]` caps input i's completion) and the trainer supplies a reward function; this
module decides, round by round, which prompts get which prefix, and returns flat `Sample`s that any engine can
turn into a batch.

A sample's response is its expert prefix followed by its own completion, and the response as a whole is capped
at `max_response_tokens`, as in the authors' code (it cuts prefix + completion to the response length): a
guided sample generates at most `max_response_tokens - len(prefix)` tokens, and a prefix (or LUFFY's reference
solution) longer than the cap is cut to it. Every sample then fits the same token budget as GRPO's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from trapo.guidance import GuidanceSchedule, guidance_levels
from trapo.prefix import break_ends_from_offsets, cut_index


@dataclass
class Prompt:
    """One training prompt, tokenized: its reference solution ends with EOS."""

    prompt_ids: list[int]
    solution_ids: list[int]
    solution_breaks: list[int]  # token positions just after each paragraph break of the solution
    gold: str


def tokenize_prompt(tokenizer, prompt_text: str, solution: str, gold: str, eos_id: int | None = None) -> Prompt:
    """A `Prompt` from an already formatted prompt (`evaluation.prompts.build_prompt`) and its reference solution,
    which gets EOS (default: the tokenizer's) and the token positions of its paragraph breaks. Every engine builds
    its prompts with this (the local trainer, OpenRLHF's rollout agent, the benchmark)."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    enc = tokenizer(solution, add_special_tokens=False, return_offsets_mapping=True)
    eos = tokenizer.eos_token_id if eos_id is None else eos_id
    return Prompt(list(prompt_ids), list(enc.input_ids) + [eos], break_ends_from_offsets(solution, enc.offset_mapping),
                  str(gold))


@dataclass
class Sample:
    group: int  # index of the prompt in the step's batch
    round: int  # micro-group index (0 = unguided round)
    prompt_ids: list[int]
    # expert tokens, trained with the prefix loss: a guided round's prefix given to the policy, or the whole
    # reference (LUFFY's off-policy member, an SFT step's solution)
    expert_ids: list[int]
    completion_ids: list[int]  # the policy's own tokens (trained with RL)
    reward: float = 0.0
    expert_weight: float = 1.0  # the weight of its expert tokens' loss: 0 for a duplicated prefix (each counts once)
    off_policy: bool = False  # LUFFY: a whole reference solution standing in the group
    advantage: float = 0.0
    text: str = field(default="", repr=False)
    # drawn in a round that gave guidance (or LUFFY's reference): stored, not read off the prefix, because a
    # guided round's cut can be 0 tokens, and such a sample still belongs with the guided ones in the
    # baseline and the metrics (rewards and lengths are over unguided samples)
    guided: bool = False


GenerateFn = Callable[[list[list[int]], list[int]], list[list[int]]]  # (inputs, max new tokens of each)
DecodeFn = Callable[[list[int]], str]
RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def rollout(
    prompts: Sequence[Prompt],
    schedule: GuidanceSchedule,
    generate: GenerateFn,
    decode: DecodeFn,
    reward_fn: RewardFn,
    *,
    max_response_tokens: int,
    adaptive: bool = True,
    off_policy_reference: bool = False,
) -> tuple[list[Sample], torch.Tensor]:
    """Draw every prompt's group, micro-group by micro-group; return the samples and each prompt's level.

    With `adaptive=False` no prefix is ever given (GRPO; pass a one-round schedule for speed).
    With `off_policy_reference=True` (LUFFY) the last member of each group is the whole reference
    solution instead of a sample of the policy.
    """
    if max_response_tokens < 1:
        raise ValueError(f"max_response_tokens must be >= 1, got {max_response_tokens}")
    cap = max_response_tokens
    n = len(prompts)
    reward_sum = torch.zeros(n)
    count = torch.zeros(n)
    guided_rounds = torch.zeros((schedule.n_rounds, n), dtype=torch.bool)
    samples: list[Sample] = []
    for r, size in enumerate(schedule.group_sizes):
        guided = schedule.guided(r, reward_sum, count) if adaptive else torch.zeros(n, dtype=torch.bool)
        guided_rounds[r] = guided
        batch: list[Sample] = []
        for g, p in enumerate(prompts):
            k = 0
            if guided[g]:
                k = min(cut_index(len(p.solution_ids), schedule.prefix_ratios[r], p.solution_breaks), cap)
            for j in range(size):
                batch.append(Sample(g, r, p.prompt_ids, p.solution_ids[:k], [], guided=bool(guided[g]),
                                    expert_weight=1.0 if (j == 0 or not schedule.dedupe_prefix_loss) else 0.0))
        if off_policy_reference and r == schedule.n_rounds - 1:
            # LUFFY: the group's last member is the reference solution itself
            # (it carries the prefix loss, scaled by its advantage, even where micro-group dedupe would drop it)
            for s in batch[size - 1 :: size]:
                s.expert_ids, s.off_policy, s.expert_weight = prompts[s.group].solution_ids[:cap], True, 1.0
                s.guided = True
        # nothing to generate after the whole solution (it ends in EOS) or a prefix that fills the response
        todo = [s for s in batch
                if len(s.expert_ids) < cap and not (s.expert_ids and s.expert_ids == prompts[s.group].solution_ids)]
        if todo:
            budgets = [cap - len(s.expert_ids) for s in todo]
            outs = generate([s.prompt_ids + s.expert_ids for s in todo], budgets)
            for s, out, b in zip(todo, outs, budgets, strict=True):
                s.completion_ids = list(out)[:b]
        for s in batch:
            s.text = decode(s.expert_ids + s.completion_ids)
        rewards = reward_fn([s.text for s in batch], [prompts[s.group].gold for s in batch])
        for s, rew in zip(batch, rewards, strict=True):
            s.reward = float(rew)
            reward_sum[s.group] += s.reward
            count[s.group] += 1
        samples.extend(batch)
    return samples, guidance_levels(guided_rounds)
