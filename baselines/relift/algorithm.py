"""ReLIFT (Ma et al., "Learning What RL Can't", arXiv 2506.07527): RL with SFT on the hardest questions interleaved.

Each training step is one ordinary RL update (Dr.GRPO, exactly method=grpo's), sometimes followed by one
separate SFT update (TRAPO-SPEC.md, "ReLIFT"; the authors' verl trainer is the reference for the details):

- a *hardest question* is a prompt whose n rollouts all got reward 0 (`hardest_groups`); each one of a step adds
  one row -- the prompt and its reference solution from the training set -- to a buffer (`HardBuffer`): the
  step's rows in batch order, in front of the older ones (newest first);
- when the buffer holds >= `sft_data_size` rows, the newest `sft_data_size` are taken out and one SFT optimizer
  step runs on them: token-mean NLL over the reference solution (+ EOS) minus `entropy_coef` x the token-mean
  entropy (`sft_loss`); prompt tokens carry no loss. Extra rows wait; at most one SFT step per RL step; the
  buffer carries over epochs and is part of every checkpoint;
- the SFT step has its own AdamW (own moments, step count, lr, betas, weight decay) and its own gradient clip,
  on the same parameters as the RL optimizer.

This module holds the algorithm's pieces as plain functions and classes (no engine). The engines' halves are
step hooks (trapo/hooks.py): `baselines.relift.local.LocalRelift` (the local trainer; its own
`torch.optim.AdamW`) and `baselines.relift.openrlhf.ActorRelift` (OpenRLHF's DeepSpeed actor, where DeepSpeed owns
the only optimizer and the second set of moments is swapped in and out of it:
`trapo.engines.openrlhf.optimizer_swap`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from trapo.losses import masked_sum


# ---- the algorithm's pieces (pure) ------------------------------------------------------------------
def hardest_groups(rewards: Sequence[float], groups: Sequence[int]) -> list[int]:
    """Groups (prompts) none of whose samples got a reward: every reward is 0. In order of first appearance."""
    order: list[int] = []
    best: dict[int, float] = {}
    for r, g in zip(rewards, groups, strict=True):
        g = int(g)
        if g not in best:
            order.append(g)
            best[g] = float(r)
        else:
            best[g] = max(best[g], float(r))
    return [g for g in order if best[g] == 0.0]


class HardBuffer:
    """The SFT buffer: rows newest first; `take()` removes the newest `size` rows once there are that many.

    A row is whatever identifies a (prompt, reference solution) pair for the engine: a training-set index on
    the local engine, the prompt text and solution on OpenRLHF. Rows must be JSON values (checkpoints)."""

    def __init__(self, size: int, rows: Sequence[Any] = ()):
        if int(size) < 1:
            raise ValueError(f"config method.relift.sft_data_size must be >= 1, got {size}")
        self.size = int(size)
        self.rows: list[Any] = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: Sequence[Any]) -> None:
        """One step's hardest rows (in batch order) go in front of the older ones."""
        self.rows[:0] = list(rows)

    @property
    def ready(self) -> bool:
        return len(self.rows) >= self.size

    def take(self) -> list[Any] | None:
        """The newest `size` rows, removed from the buffer; None (and nothing removed) while fewer are held."""
        if not self.ready:
            return None
        out, self.rows = self.rows[: self.size], self.rows[self.size:]
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "rows": list(self.rows)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rows = list(state["rows"])


@dataclass
class SFTLoss:
    loss: torch.Tensor  # what is back-propagated
    nll: torch.Tensor  # token-mean NLL (detached)
    entropy: torch.Tensor  # token-mean entropy (detached)


def sft_loss(logprobs: torch.Tensor, entropy: torch.Tensor | None, mask: torch.Tensor, *, entropy_coef: float,
             normalizer: float | None = None) -> SFTLoss:
    """ReLIFT's SFT objective on the masked (reference) tokens: NLL - entropy_coef x entropy, both summed and
    divided by `normalizer` (the SFT batch's token count: a token mean over the whole batch; default this mask's)."""
    n = float(mask.sum().clamp(min=1)) if normalizer is None else float(normalizer)
    nll = masked_sum(-logprobs, mask) / n
    loss = nll
    ent = torch.zeros((), device=logprobs.device)
    if entropy is not None:
        ent = masked_sum(entropy, mask) / n
        if entropy_coef:
            loss = loss - entropy_coef * ent
    return SFTLoss(loss=loss, nll=nll.detach(), entropy=ent.detach())


@dataclass(frozen=True)
class ReliftSettings:
    sft_data_size: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float
    grad_clip: float
    entropy_coef: float
    max_tokens: int  # reference solutions are cut to the response cap (rollout.max_new_tokens), like every method's

    @classmethod
    def from_config(cls, cfg) -> "ReliftSettings | None":
        """The method's `relift` block (conf/method/relift.yaml), or None for every other method."""
        r = cfg.method.get("relift")
        if not r:
            return None
        s = cls(sft_data_size=int(r.sft_data_size), lr=float(r.lr), betas=(float(r.betas[0]), float(r.betas[1])),
                weight_decay=float(r.weight_decay), eps=float(r.get("eps", 1e-8)), grad_clip=float(r.grad_clip),
                entropy_coef=float(r.entropy_coef), max_tokens=int(cfg.rollout.max_new_tokens))
        if s.sft_data_size < 1:
            raise ValueError(f"config method.relift.sft_data_size must be >= 1, got {s.sft_data_size}")
        if s.lr <= 0:
            raise ValueError(f"config method.relift.lr must be > 0, got {s.lr}")
        if s.grad_clip <= 0:
            raise ValueError(f"config method.relift.grad_clip must be > 0, got {s.grad_clip}")
        if float(cfg.method.sft_fraction) > 0 or cfg.method.guidance != "none":
            raise ValueError("config method.relift: ReLIFT's RL step is plain GRPO (method.sft_fraction 0, "
                             "method.guidance none)")
        return s
