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

This module holds the algorithm's pieces as plain functions and classes, and the local engine's SFT step
(`LocalRelift`, its own `torch.optim.AdamW`). On OpenRLHF (trapo/engines/openrlhf/relift.py) DeepSpeed owns the
only optimizer, so the second set of moments is swapped in and out of it (`OptimizerStateSwap`).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

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


# ---- a second AdamW inside an optimizer that exists once (DeepSpeed) ---------------------------------
class OptimizerStateSwap:
    """Own AdamW state for an optimizer object that is shared (DeepSpeed's basic optimizer holds the only handle
    on the partitioned fp32 weights): `with swap.active(opt):` takes the optimizer's per-parameter state (moments,
    step counts) and its hyper-parameters out, puts this one's in, and on leaving stores this one's and gives the
    optimizer back its own. Inside, `opt.step()` is a step of the second AdamW; outside, the first never notices.

    The stored state is kept on `store_device` (CPU by default: it would otherwise double the optimizer's GPU
    memory) and goes back to each tensor's own device when swapped in."""

    HYPER = ("lr", "betas", "weight_decay", "eps")

    def __init__(self, *, lr: float, betas: Sequence[float], weight_decay: float, eps: float = 1e-8,
                 store_device: str | torch.device | None = "cpu"):
        self.hyper = {"lr": float(lr), "betas": tuple(float(b) for b in betas), "weight_decay": float(weight_decay),
                      "eps": float(eps)}
        self.store_device = store_device
        self.state: list[dict[str, Any]] | None = None  # per parameter (param_groups order): {key: (value, device)}
        self.groups: list[dict[str, Any]] | None = None  # other keys of each group (FusedAdam keeps 'step' there)

    @staticmethod
    def _params(opt) -> list[torch.Tensor]:
        return [p for g in opt.param_groups for p in g["params"]]

    def _store(self, v):
        if torch.is_tensor(v):
            return (v.detach().to(self.store_device) if self.store_device is not None else v, v.device)
        return (v, None)

    @staticmethod
    def _restore(entry):
        v, dev = entry
        return v.to(dev) if torch.is_tensor(v) and dev is not None else v

    @contextmanager
    def active(self, opt):
        params = self._params(opt)
        if self.state is not None and len(self.state) != len(params):
            raise ValueError(f"optimizer has {len(params)} parameters, the stored ReLIFT SFT state {len(self.state)}")
        own_state = [opt.state.pop(p) if p in opt.state else None for p in params]
        own_groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        for i, p in enumerate(params):
            if self.state is not None and self.state[i]:
                opt.state[p] = {k: self._restore(e) for k, e in self.state[i].items()}
        for i, g in enumerate(opt.param_groups):  # the first's configuration, the second's own counters and hypers
            mine = {k: v for k, v in own_groups[i].items() if k != "step"}
            if self.groups is not None:
                mine.update({k: self._restore(e) for k, e in self.groups[i].items()})
            mine.update(self.hyper)
            for k in [k for k in g if k != "params"]:
                del g[k]
            g.update(mine)
        try:
            yield
        finally:
            self.state = [{k: self._store(v) for k, v in opt.state.pop(p).items()} if p in opt.state else {}
                          for p in params]
            self.groups = [{k: self._store(v) for k, v in g.items() if k not in ("params", *self.HYPER)}
                           for g in opt.param_groups]
            for p, s in zip(params, own_state):
                if s is not None:
                    opt.state[p] = s
            for g, own in zip(opt.param_groups, own_groups):
                for k in [k for k in g if k != "params"]:
                    del g[k]
                g.update(own)

    # checkpoints: tensors (safetensors) + a JSON layout, nothing pickled
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        layout: dict[str, Any] = {"hyper": {k: list(v) if isinstance(v, tuple) else v for k, v in self.hyper.items()},
                                  "state": None, "groups": None}

        def put(name, entry):
            v, dev = entry
            if torch.is_tensor(v):
                tensors[name] = v.detach().to("cpu", copy=True).contiguous()  # never an alias of live state
                return {"tensor": name, "device": str(dev) if dev is not None else "cpu"}
            return {"value": v}

        if self.state is not None:
            layout["state"] = [{k: put(f"relift.state.{i}.{k}", e) for k, e in s.items()} for i, s in
                               enumerate(self.state)]
        if self.groups is not None:
            layout["groups"] = [{k: put(f"relift.group.{i}.{k}", e) for k, e in g.items()} for i, g in
                                enumerate(self.groups)]
        return tensors, layout

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> None:
        """Inverse of `state_dict`: each tensor goes back to the device it was swapped in on."""

        def get(spec):
            if "tensor" not in spec:
                return (spec["value"], None)
            dev = torch.device(spec.get("device", "cpu"))
            t = tensors[spec["tensor"]]
            return (t.to(self.store_device) if self.store_device is not None else t.to(dev), dev)

        st, gr = layout.get("state"), layout.get("groups")
        self.state = None if st is None else [{k: get(spec) for k, spec in s.items()} for s in st]
        self.groups = None if gr is None else [{k: get(spec) for k, spec in g.items()} for g in gr]


# ---- the local engine ----------------------------------------------------------------------------------
class LocalRelift:
    """ReLIFT on `trapo.engines.local.LocalEngine`: the buffer of training-set indices and the SFT step with its
    own AdamW (on the same fp32 master weights as the RL optimizer when the model is bf16)."""

    CHECKPOINT_KEY = "relift"  # state.json entry (buffer, counters) and optimizer name in the checkpoint

    def __init__(self, settings: ReliftSettings, engine):
        from trapo.engines.local import make_optimizer

        self.settings = settings
        self.engine = engine
        self.buffer = HardBuffer(settings.sft_data_size)
        self.sft_steps = 0
        self.optimizer = make_optimizer(engine.model, lr=settings.lr, weight_decay=settings.weight_decay,
                                        betas=settings.betas, masters=getattr(engine.optimizer, "masters", None))
        for g in self.optimizer.param_groups:
            g["eps"] = settings.eps

    @classmethod
    def from_config(cls, cfg, engine) -> "LocalRelift | None":
        s = ReliftSettings.from_config(cfg)
        return cls(s, engine) if s is not None else None

    def after_rl_step(self, indices: Sequence[int], samples: Sequence, prompt: Callable[[int], Any]) -> dict:
        """The step's hardest prompts into the buffer (training-set indices), then at most one SFT step."""
        t0 = time.perf_counter()
        hard = hardest_groups([s.reward for s in samples], [s.group for s in samples])
        self.buffer.add([int(indices[g]) for g in hard])
        metrics = {"train/relift_hard_prompts": float(len(hard)),
                   "train/relift_hard_frac": float(len(hard)) / max(1, len(indices))}
        rows = self.buffer.take()
        if rows is not None:
            st = self.sft_step([prompt(i) for i in rows])
            metrics.update({"train/relift_sft_loss": st["nll"], "train/relift_sft_entropy": st["entropy"],
                            "train/relift_sft_grad_norm": st["grad_norm"],
                            "train/relift_sft_tokens": st["tokens"]})
            if not st["finite"]:
                metrics["train/relift_sft_skipped_nonfinite"] = 1.0
            metrics["time/relift_sft_s"] = time.perf_counter() - t0
        metrics["train/relift_buffer_size"] = float(len(self.buffer))
        metrics["train/relift_sft_steps"] = float(self.sft_steps)
        return metrics

    def sft_step(self, prompts: Sequence) -> dict[str, float]:
        """One AdamW step of this optimizer on the reference solutions of `prompts` (each + EOS, cut to the
        response cap), the token-mean over the whole batch; the prompt of each row runs once (PromptStates)."""
        from trapo.rollout import Sample

        eng, s = self.engine, self.settings
        samples = [Sample(g, 0, list(p.prompt_ids), list(p.solution_ids[: s.max_tokens]), [], reward=1.0)
                   for g, p in enumerate(prompts)]
        n_tokens = float(sum(len(x.prefix_ids) for x in samples))
        eng.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        eng.optimizer.zero_grad(set_to_none=True)
        nll = ent = 0.0
        for states, batches in eng.update_batches(samples):  # the engine's micro-batches and token budget
            for idx in batches:
                mb, logp, entropy = eng.logprobs(states, samples, idx)
                out = sft_loss(logp, entropy, mb.prefix_mask, entropy_coef=s.entropy_coef, normalizer=n_tokens)
                out.loss.backward()
                eng._grads_to_masters()
                nll += float(out.nll)
                ent += float(out.entropy)
            states.backward()
            eng._grads_to_masters()
        grad_norm = torch.nn.utils.clip_grad_norm_(eng._updated_params(), s.grad_clip)
        finite = bool(torch.isfinite(grad_norm)) and math.isfinite(nll)
        if finite:
            self.optimizer.step()
            self.sft_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        eng.optimizer.zero_grad(set_to_none=True)
        return {"nll": nll, "entropy": ent, "grad_norm": float(grad_norm), "tokens": n_tokens, "finite": finite}

    # checkpoints: the buffer and counters in state.json, the optimizer's tensors beside the RL optimizer's
    def state(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "sft_steps": self.sft_steps}

    def load(self, state: Mapping[str, Any] | None) -> None:
        if state is None:
            raise ValueError("the checkpoint has no ReLIFT state (written by another method or an older trapo)")
        self.buffer.load_state_dict(state["buffer"])
        self.sft_steps = int(state["sft_steps"])
