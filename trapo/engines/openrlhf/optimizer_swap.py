"""A second AdamW state inside an optimizer that exists once: DeepSpeed's.

A method with an optimizer step of its own beside the RL one (ReLIFT's SFT step, baselines/relift/openrlhf.py)
cannot build a second optimizer on OpenRLHF: DeepSpeed's basic optimizer holds the only handle on the (partitioned)
fp32 weights. `OptimizerStateSwap` swaps a second set of moments, step counts and hyper-parameters into any torch
optimizer for a `with` block; `EngineStateSwap` does it on a DeepSpeed engine at every ZeRO stage.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Mapping, Sequence

import torch


class OptimizerStateSwap:
    """Own AdamW state for an optimizer object that is shared (DeepSpeed's basic optimizer holds the only handle
    on the partitioned fp32 weights): `with swap.active(opt):` takes the optimizer's per-parameter state (moments,
    step counts) and its hyper-parameters out, puts this one's in, and on leaving stores this one's and gives the
    optimizer back its own. Inside, `opt.step()` is a step of the second AdamW; outside, the first never notices.

    The stored state is kept on `store_device` (CPU by default: it would otherwise double the optimizer's GPU
    memory) and goes back to each tensor's own device when swapped in."""

    HYPER = ("lr", "betas", "weight_decay", "eps")

    def __init__(self, *, lr: float, betas: Sequence[float], weight_decay: float, eps: float = 1e-8,
                 store_device: str | torch.device | None = "cpu", name: str = "swap"):
        self.name = name  # prefix of its tensors in a checkpoint
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
            raise ValueError(f"optimizer has {len(params)} parameters, the stored {self.name} state {len(self.state)}")
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
            layout["state"] = [{k: put(f"{self.name}.state.{i}.{k}", e) for k, e in s.items()} for i, s in
                               enumerate(self.state)]
        if self.groups is not None:
            layout["groups"] = [{k: put(f"{self.name}.group.{i}.{k}", e) for k, e in g.items()} for i, g in
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


def zero3_state_keys(engine) -> list[torch.Tensor] | None:
    """The tensors DeepSpeed's ZeRO-3 optimizer keeps its per-parameter state under, or None below stage 3.

    Stage 3 lists nothing in its basic optimizer's param_groups between steps: `_optimizer_step` puts one flat fp32
    partition (`fp32_partitioned_groups_flat[sub_group]`) into its group's list, steps, and empties the list again,
    so the state is keyed by those partitions. Where the state is not all in that optimizer's dict, it cannot be
    swapped: refused."""
    zero_opt = engine.optimizer
    if engine.zero_optimization_stage() != 3:
        return None
    if getattr(zero_opt, "swap_optimizer", False):
        raise ValueError("a second optimizer state (method=relift's SFT step) on ZeRO-3 with the optimizer state "
                         "offloaded to NVMe is not supported (the RL optimizer's moments live in swap files that "
                         "cannot be set aside): offload to the CPU or not at all")
    if getattr(zero_opt, "backup_optimizer", None) is not None or getattr(zero_opt, "zenflow", False):
        raise ValueError("a second optimizer state (method=relift's SFT step) on ZeRO-3 with a partial optimizer "
                         "offload (ratio < 1) or ZenFlow is not supported (another optimizer holds part of the RL "
                         "state)")
    if zero_opt.optimizer is not engine.basic_optimizer:
        raise ValueError("a second optimizer state (method=relift's SFT step): DeepSpeed's ZeRO-3 optimizer does not "
                         "step its basic optimizer")
    return list(zero_opt.fp32_partitioned_groups_flat)


class EngineStateSwap(OptimizerStateSwap):
    """`OptimizerStateSwap` on a DeepSpeed engine's basic optimizer, every ZeRO stage: `with swap.on(engine):`.
    ZeRO-0/1/2 list the tensors with state in param_groups; ZeRO-3 does not (`zero3_state_keys`)."""

    _keys: list[torch.Tensor] | None = None

    def _params(self, opt) -> list[torch.Tensor]:
        return list(self._keys) if self._keys is not None else OptimizerStateSwap._params(opt)

    @contextmanager
    def on(self, engine):
        self._keys = zero3_state_keys(engine)
        try:
            with self.active(engine.basic_optimizer):
                yield
        finally:
            self._keys = None
