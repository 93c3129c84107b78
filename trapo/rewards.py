r"""Training rewards: binary correctness of (expert prefix + completion), by config name (`data.reward`).

A reward function is any callable ``(responses, golds) -> list[float]``; the training loop only sees this
interface. The reward is a choice of its own, apart from the evaluation grader (`evaluation.grader`), whose
lenient extraction lets a later sentence override a box: fine for scoring a benchmark, one more thing for RL to
exploit in a reward. The names (docs/rewards.md has the table of cases):

- ``math_verify``: the authors' reward (their `reward_impl_version=4`): math-verify's
  ``verify(parse(gold), parse(response))`` on the whole response. The gold is parsed as ``\boxed{gold}`` (as
  verl's math-verify reward does), so LaTeX golds parse too. math-verify reads the first box it finds, so a
  box followed by another answer scores what the box says. ``math`` is the name older configs used for the
  real-data reward: it now means this one.
- ``boxed``: strict: the last ``\boxed{}`` decides, compared with the gold by the project's equivalence
  (`evaluation.grader.grade_pair`: numbers, LaTeX, sympy); no box, or boxes that differ (as text), score 0
  (boxing every guess cannot hedge).
- ``exact``: the synthetic task's integers: the last boxed answer equals the gold string.

The first two run in the grader's worker processes (a per-item time limit, a crash scores 0, a cache).

Your own reward: `data.reward` may name any importable callable with the same contract, Hydra-style,
``data.reward={_target_: mypkg.rewards.my_reward}`` (a function is the reward; with more keys it gets them as
keyword arguments; a class is instantiated with them and its instances called). docs/rewards.md shows it.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Protocol, Sequence

log = logging.getLogger(__name__)

REWARDS = ("math_verify", "boxed", "exact")
ALIASES = {"math": "math_verify"}


class RewardFn(Protocol):
    def __call__(self, responses: Sequence[str], golds: Sequence[str]) -> list[float]: ...


def all_boxed(text: str) -> list[str]:
    r"""Contents of every complete ``\boxed{...}`` in `text` (balanced braces), in order."""
    out, start = [], text.find("\\boxed")
    while start >= 0:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        out.append(text[i + 1 : j])
                        break
                j += 1
        start = text.find("\\boxed", start + 1)
    return out


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` in `text` (balanced braces), or None."""
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


class BoxedExactMatch:
    """Reward 1.0 when the last boxed answer equals the gold string (whitespace-stripped), else 0.0."""

    def __call__(self, responses: Sequence[str], golds: Sequence[str]) -> list[float]:
        out = []
        for response, gold in zip(responses, golds, strict=True):
            pred = last_boxed(response)
            out.append(1.0 if pred is not None and pred.strip() == str(gold).strip() else 0.0)
        return out


def math_verify_pair(gold: str, response: str) -> bool:
    r"""math-verify's verdict on a whole response (runs in a grader worker: imports math-verify there)."""
    from math_verify import parse, verify

    return bool(verify(parse("\\boxed{" + gold + "}"), parse(response)))


class _PooledReward:
    """A reward whose verdicts come from `evaluation.grader.Grader`'s workers (time limit, cache). If the pool
    itself breaks it is rebuilt once per call; a timeout or a crashed worker scores 0.0 and training goes on."""

    target = "evaluation.grader:grade_pair"
    preload: tuple[str, ...] = ("evaluation.symbolic",)

    def __init__(self, workers: int | None = None, timeout: float | None = None):
        from evaluation.grader import DEFAULT_TIMEOUT, Grader

        self.grader = Grader(workers=workers, timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                             target=self.target, preload=self.preload)

    def keys(self, responses: Sequence[str], golds: Sequence[Any]) -> list[tuple | None]:
        raise NotImplementedError

    def __call__(self, responses: Sequence[str], golds: Sequence[Any]) -> list[float]:
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses for {len(golds)} golds")
        keys = self.keys(responses, golds)
        try:
            ok = self.grader.verdicts(keys)
        except (RuntimeError, OSError, EOFError) as exc:
            log.warning("reward grader pool failed (%s); restarting it", exc)
            self.grader.close()
            ok = self.grader.verdicts(keys)
        return [1.0 if c else 0.0 for c in ok]

    def close(self) -> None:
        self.grader.close()


class MathVerifyReward(_PooledReward):
    """``math_verify``: the authors' reward, math-verify on the whole response (see the module docstring)."""

    target = "trapo.rewards:math_verify_pair"
    preload = ("math_verify",)

    def keys(self, responses, golds):
        from evaluation.answer import gold_to_text

        return [(gold_to_text(g), str(r)) if isinstance(r, str) else None for r, g in zip(responses, golds)]


class StrictBoxedReward(_PooledReward):
    """``boxed``: the last box, graded by the project's equivalence; no box, or boxes that differ, score 0."""

    def keys(self, responses, golds):
        from evaluation.answer import gold_to_text

        out: list[tuple | None] = []
        for r, g in zip(responses, golds):
            boxes = [b.strip() for b in all_boxed(r)] if isinstance(r, str) else []
            out.append((gold_to_text(g), boxes[-1], None, None) if boxes and len(set(boxes)) == 1 else None)
        return out


class CheckedReward:
    """A user's reward function, held to the contract: one float per response (a clear error otherwise)."""

    def __init__(self, fn, target: str):
        self.fn, self.target = fn, target

    def __call__(self, responses: Sequence[str], golds: Sequence[Any]) -> list[float]:
        out = self.fn(list(responses), list(golds))
        try:
            values = [float(x) for x in out]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"data.reward {self.target}: must return one number per response, got "
                            f"{type(out).__name__} ({exc})") from None
        if len(values) != len(responses):
            raise ValueError(f"data.reward {self.target}: returned {len(values)} rewards for {len(responses)} "
                             "responses")
        return values

    def close(self) -> None:
        if hasattr(self.fn, "close"):
            self.fn.close()


def _custom_reward(spec: Mapping[str, Any]) -> RewardFn:
    import functools
    import inspect

    from hydra.utils import get_object

    target = str(spec["_target_"])
    try:
        obj = get_object(target)
    except Exception as exc:
        raise ValueError(f"data.reward._target_={target!r} cannot be imported ({exc})") from None
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    if inspect.isclass(obj):
        fn = obj(**kwargs)
    elif callable(obj):
        fn = functools.partial(obj, **kwargs) if kwargs else obj
    else:
        raise TypeError(f"data.reward._target_={target!r} is a {type(obj).__name__}, not a function or class")
    return CheckedReward(fn, target)


def build_reward(kind) -> RewardFn:
    """The training reward of a config's `data.reward`: ``math_verify``, ``boxed``, ``exact``, or a mapping with
    ``_target_`` naming your own (module doc)."""
    if hasattr(kind, "items"):  # a DictConfig or dict: {_target_: ..., **kwargs}
        from omegaconf import DictConfig, OmegaConf

        spec = OmegaConf.to_container(kind, resolve=True) if isinstance(kind, DictConfig) else dict(kind)
        if "_target_" not in spec:
            raise ValueError(f"data.reward: a mapping needs _target_ (an importable reward function), got {spec}")
        return _custom_reward(spec)
    name = ALIASES.get(str(kind), str(kind))
    if name == "exact":
        return BoxedExactMatch()
    if name == "math_verify":
        return MathVerifyReward()
    if name == "boxed":
        return StrictBoxedReward()
    raise ValueError(f"unknown reward {kind!r} (config data.reward); expected one of {', '.join(REWARDS)}, or "
                     "{_target_: your.module.function} (docs/rewards.md)")
