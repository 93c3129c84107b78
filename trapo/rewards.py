"""Rewards: binary correctness of the final answer of (expert prefix + completion).

A reward function is any callable ``(responses, golds) -> list[float]``. The training loop only sees
this interface; the synthetic task uses exact integer match (`BoxedExactMatch`), real math data uses
the project's grader (`evaluation.grader.MathReward`, the same code that scores the benchmarks).
"""

from __future__ import annotations

from typing import Protocol, Sequence


class RewardFn(Protocol):
    def __call__(self, responses: Sequence[str], golds: Sequence[str]) -> list[float]: ...


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` in `text` (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


class BoxedExactMatch:
    """Reward 1.0 when the last boxed answer equals the gold string (whitespace-stripped), else 0.0."""

    def __call__(self, responses: Sequence[str], golds: Sequence[str]) -> list[float]:
        out = []
        for response, gold in zip(responses, golds, strict=True):
            pred = last_boxed(response)
            out.append(1.0 if pred is not None and pred.strip() == str(gold).strip() else 0.0)
        return out


def build_reward(kind: str) -> RewardFn:
    """Reward by config name: ``exact`` (synthetic integers) or ``math`` (the benchmark grader)."""
    if kind == "exact":
        return BoxedExactMatch()
    if kind == "math":
        from evaluation.grader import MathReward  # imported lazily: math-verify is heavy

        return MathReward()
    raise ValueError(f"unknown reward kind {kind!r}; expected 'exact' or 'math'")
