"""Step hooks: how a method adds work around the RL step without edits to the trainer or the OpenRLHF actor.

A hybrid method (ReLIFT's SFT step on the hardest questions; a CHORD-style mix or a prefix schedule next) is a
config block under `method` (conf/method/<name>.yaml) and hooks that its runner in baselines/ hands to the engine:

- the local trainer (`trapo.trainer.Trainer(..., hooks=[cls])`) builds each `StepHook` class with
  `cls.from_config(cfg, engine)` once its engine exists, calls `after_rl_step` after every RL step that applied
  its update, saves `state()` in the checkpoint's state.json under `config_key` and `optimizers()` beside the RL
  optimizer, and gives the state back with `load` on resume;
- the OpenRLHF actor runs in a Ray worker: its hooks travel as "module:Class" names (`ACTOR_HOOKS_ENV`, set by
  the launcher from the runner's list) and are imported there (`import_hook`); `ActorHook` below is what the
  actor calls.

A hook claims its method block by `config_key`. A block of `method` that neither the trainer reads
(`TRAINER_METHOD_KEYS`) nor a hook claims is refused (`check_claimed`): a method run without the hooks that read
its block fails at once instead of training something else.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol, Sequence

# what the trainer and the engines read of `method`: conf/method/_base.yaml's keys (a test holds them equal) and
# the runner's name
TRAINER_METHOD_KEYS = frozenset({"name", "runner", "sft_fraction", "guidance", "guidance_schedule", "prefix_loss",
                                 "alpha", "gamma", "off_policy", "baseline_includes_guided", "scale_by_std",
                                 "entropy_coef"})


class StepHook(Protocol):
    """A hook of the local trainer (one process; the engine is `trapo.engines.local.LocalEngine`)."""

    config_key: ClassVar[str]  # its method block, its state.json entry and its optimizers' name prefix

    @classmethod
    def from_config(cls, cfg, engine) -> "StepHook | None":
        """The hook for this run, or None when the method does not use it."""

    def after_rl_step(self, indices: Sequence[int], samples: Sequence,
                      prompt: Callable[[int], Any]) -> dict[str, float]:
        """After an applied RL step: the step's training-set `indices`, its samples (rewards, advantages, groups)
        and `prompt(i)`, the tokenized training prompt i. Returns metrics for the step's row."""

    def state(self) -> dict:
        """JSON state for the checkpoint."""

    def load(self, state: Mapping[str, Any] | None) -> None:
        """The state `state()` gave (None: the checkpoint has none, which a hook may refuse)."""

    def optimizers(self) -> dict[str, Any]:
        """Optimizers of its own, checkpointed beside the RL optimizer (name -> torch optimizer)."""


class ActorHook(Protocol):
    """A hook of OpenRLHF's DeepSpeed actor (`trapo.engines.openrlhf.actor.TrapoActorPPOTrainer`), one per rank."""

    config_key: ClassVar[str]

    @classmethod
    def from_config(cls, cfg) -> "ActorHook | None": ...

    def check(self, trainer) -> None:
        """Refuse, before the first step, what it cannot run on this actor (e.g. an optimizer layout)."""

    def collect(self, experience, rewards, zero_signal) -> None:
        """Each micro-batch of the RL step: its Experience, per-sample rewards and zero-signal flags [B]."""

    def after_step(self, trainer) -> dict[str, float]:
        """After the RL update DeepSpeed applied. Metrics named `hook/<name>` are logged as `train/<name>`."""

    def drop_step(self) -> None:
        """Instead of `after_step` when DeepSpeed skipped the update (non-finite gradients)."""

    def save(self, tag_dir) -> None:
        """Beside OpenRLHF's checkpoint, in its tag directory."""

    def load(self, tag_dir) -> bool:
        """From a tag directory; False when it holds nothing of this hook."""


def import_hook(spec: str) -> type:
    """The class a "module:Class" name names (how actor hooks reach a Ray worker)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"hook {spec!r}: expected 'module:Class'")
    return getattr(importlib.import_module(module), name)


def check_claimed(method, hooks: Iterable[type]) -> None:
    """Refuse a `method` block that the trainer does not read and no hook in `hooks` claims."""
    claimed = TRAINER_METHOD_KEYS | {h.config_key for h in hooks}
    unread = sorted(k for k in method if k not in claimed)
    if unread:
        raise ValueError(
            f"config method.{unread[0]} (method={method.get('name')}): no hook of this run reads it. A method with "
            "its own block runs through its runner, which adds the hooks that read it: `python experiments/run.py "
            f"method={method.get('name')}` (or `baselines.run`), or pass its hooks to the trainer")
