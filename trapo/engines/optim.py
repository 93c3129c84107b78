"""The local engine's optimizer: torch's AdamW, or AdamW on fp32 master weights for a bf16/fp16 model."""

from __future__ import annotations

import torch


LOW_PRECISION = (torch.bfloat16, torch.float16)


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW on fp32 master copies of a low-precision (bf16) model, as DeepSpeed's bf16 optimizer does.

    Plain AdamW on bf16 weights rounds most small updates away (an update below half a bf16 ulp of the weight
    is lost: at lr 5e-6 most are). Here the model's bf16 weights run forward and backward; `accumulate_grads`
    adds their gradients to fp32 `.grad`s of the masters after each backward (so gradients accumulate in fp32
    too); `step` updates the masters and copies them, rounded, into the model. The masters are part of
    `state_dict()` (entry "master" of each parameter's state), so a checkpoint resumes bit-identically."""

    def __init__(self, params, *, masters: list[torch.Tensor] | None = None, **kwargs):
        self.model_params = list(params)
        if masters is None:
            masters = [p.detach().to(torch.float32, copy=True) for p in self.model_params]
        if len(masters) != len(self.model_params):
            raise ValueError("one master tensor per parameter")
        self.masters = masters
        super().__init__(self.masters, **kwargs)

    @torch.no_grad()
    def accumulate_grads(self) -> None:
        for p, m in zip(self.model_params, self.masters):
            if p.grad is None:
                continue
            if m.grad is None:
                m.grad = p.grad.to(torch.float32, copy=True)
            else:
                m.grad.add_(p.grad)
            p.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for p in self.model_params:
            p.grad = None

    def state_dict(self):
        sd = super().state_dict()
        state = {i: dict(sd["state"].get(i, {})) for i in range(len(self.masters))}  # copies: never alias self.state
        for i, m in enumerate(self.masters):
            state[i]["master"] = m
        return {"state": state, "param_groups": sd["param_groups"]}

    @torch.no_grad()
    def load_state_dict(self, state_dict) -> None:
        for p, m in zip(self.model_params, self.masters):  # parameters saved without a master: the model's value
            m.copy_(p)
        state = {}
        for i, entry in state_dict["state"].items():
            entry = dict(entry)
            master = entry.pop("master", None)
            if master is not None:
                self.masters[int(i)].copy_(master)
            if entry:
                state[i] = entry
        super().load_state_dict({"state": state, "param_groups": state_dict["param_groups"]})
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)


def make_optimizer(model, *, lr: float, weight_decay: float, betas, masters=None) -> torch.optim.Optimizer:
    """torch's AdamW; on a bf16/fp16 model, AdamW on fp32 master weights (`MasterWeightAdamW`)."""
    params = list(model.parameters())
    kwargs = dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if any(p.dtype in LOW_PRECISION for p in params):
        return MasterWeightAdamW(params, masters=masters, **kwargs)
    return torch.optim.AdamW(params, **kwargs)
