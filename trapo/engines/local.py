"""The `local` engine: one process, a transformers model, CPU or one GPU.

It only moves data: sampling (trapo.engines.sampling), turning `Sample`s into padded tensors, and one
optimizer step on `trapo.losses.policy_loss`. The algorithm's decisions live in trapo/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from trapo.engines.sampling import sample as sample_tokens
from trapo.losses import entropy_from_logits, policy_loss
from trapo.rollout import Sample


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] right-padded prompt + prefix + completion
    attention_mask: torch.Tensor
    rl_mask: torch.Tensor  # 1 on the policy's own tokens (targets), aligned with input_ids
    prefix_mask: torch.Tensor  # weight of the prefix loss on expert tokens, aligned with input_ids
    advantages: torch.Tensor  # [B]
    prefix_scale: torch.Tensor  # [B] multiplies the prefix loss (LUFFY: the sample's advantage)
    unguided: torch.Tensor  # [B] bool


def collate(samples: Sequence[Sample], pad_id: int) -> Batch:
    width = max(len(s.prompt_ids) + len(s.prefix_ids) + len(s.completion_ids) for s in samples)
    n = len(samples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    rl = torch.zeros((n, width))
    pre = torch.zeros((n, width))
    for i, s in enumerate(samples):
        a, b = len(s.prompt_ids), len(s.prompt_ids) + len(s.prefix_ids)
        c = b + len(s.completion_ids)
        ids[i, :c] = torch.tensor(s.prompt_ids + s.prefix_ids + s.completion_ids, dtype=torch.long)
        attn[i, :c] = 1
        pre[i, a:b] = s.prefix_loss_weight
        rl[i, b:c] = 1.0
    return Batch(
        input_ids=ids,
        attention_mask=attn,
        rl_mask=rl,
        prefix_mask=pre,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        prefix_scale=torch.tensor([s.advantage if s.off_policy else 1.0 for s in samples], dtype=torch.float32),
        unguided=torch.tensor([not s.guided for s in samples]),
    )


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_entropy: bool = True):
    """Log-prob of each token given the ones before it, aligned with input_ids (position 0 gets 0).

    Only one micro-batch's logits exist at a time; the caller chunks the batch.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    zeros = logp.new_zeros((logp.shape[0], 1))
    logp = torch.cat([zeros, logp], dim=1)
    ent = None
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1)
        ent = torch.cat([zeros, ent], dim=1)
    return logp, ent


def warmup_constant(warmup_steps: int):
    """LR factor after `s` optimizer steps: linear warmup over `warmup_steps` updates, then constant 1."""
    w = int(warmup_steps)
    return lambda s: min(1.0, (s + 1) / w) if w > 0 else 1.0


class LocalEngine:
    def __init__(self, model, tokenizer, *, lr: float, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 micro_batch_size: int = 32, device: str | torch.device = "cpu", betas=(0.9, 0.999),
                 warmup_steps: int = 0):
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.grad_clip = grad_clip
        self.micro_batch_size = micro_batch_size
        self.warmup_steps = int(warmup_steps)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=tuple(betas))
        # the LR schedule counts applied updates (a skipped non-finite step does not advance it); its state
        # is checkpointed, the shape (warmup_steps) comes from the config
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_constant(self.warmup_steps))
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def reset_optimizer(self, lr: float) -> None:
        """Fresh AdamW moments and LR warmup (SFT->RL starts its RL phase like a new run from the SFT weights)."""
        group = self.optimizer.param_groups[0]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=group["weight_decay"],
                                           betas=group["betas"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_constant(self.warmup_steps))

    # ---- generation -------------------------------------------------------------------------
    def generate(self, inputs: list[list[int]], *, max_new_tokens: int, temperature: float,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        self.model.eval()
        # sort by length so rows of a chunk share their padding; results go back in input order
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        outs: list[list[int]] = [[] for _ in inputs]
        chunk = max(1, self.micro_batch_size * 4)
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            res = sample_tokens(self.model, [inputs[i] for i in idx], max_new_tokens=max_new_tokens,
                                eos_id=self.eos_id, pad_id=self.pad_id, temperature=temperature, generator=generator)
            for i, r in zip(idx, res):
                outs[i] = r
        return outs

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- update -----------------------------------------------------------------------------
    def train_step(self, samples: Sequence[Sample], *, normalizer: float, prefix_loss: str, alpha: float,
                   gamma: float, entropy_coef: float, alpha_for_stats: float | None = None) -> dict[str, float]:
        """One optimizer step over all samples (micro-batched; token sums over a shared normaliser)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        order = sorted(range(len(samples)), key=lambda i: -(len(samples[i].prompt_ids) + len(samples[i].prefix_ids)
                                                           + len(samples[i].completion_ids)))
        stats = dict(loss=0.0, pg_loss=0.0, prefix_loss=0.0, ent_sum=0.0, ent_tok=0.0,
                     exp_p_sum=0.0, exp_tok=0.0, exp_low=0.0)
        a_stats = alpha if alpha_for_stats is None else alpha_for_stats
        for start in range(0, len(order), self.micro_batch_size):
            mb = collate([samples[i] for i in order[start : start + self.micro_batch_size]], self.pad_id)
            ids, attn = mb.input_ids.to(self.device), mb.attention_mask.to(self.device)
            rl_mask, prefix_mask = mb.rl_mask.to(self.device), mb.prefix_mask.to(self.device)
            logp, ent = token_logprobs(self.model, ids, attn, with_entropy=True)
            out = policy_loss(
                logp, mb.advantages.to(self.device), rl_mask, prefix_mask * mb.prefix_scale.to(self.device)[:, None],
                prefix_loss=prefix_loss, alpha=alpha, gamma=gamma, entropy=ent, entropy_coef=entropy_coef,
                normalizer=normalizer,
            )
            out.loss.backward()
            stats["loss"] += out.loss.item()
            stats["pg_loss"] += out.pg_loss.item()
            stats["prefix_loss"] += out.prefix_loss.item()
            with torch.no_grad():
                unguided_rl = rl_mask * mb.unguided.to(self.device)[:, None]
                stats["ent_sum"] += float((ent * unguided_rl).sum())
                stats["ent_tok"] += float(unguided_rl.sum())
                expert = prefix_mask > 0
                p = logp.exp()[expert]
                stats["exp_p_sum"] += float(p.sum())
                stats["exp_tok"] += float(expert.sum())
                stats["exp_low"] += float((p < a_stats).sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        # a non-finite loss or gradient applies nothing: no update, no LR-schedule step, gradients dropped
        finite = bool(torch.isfinite(grad_norm)) and all(math.isfinite(stats[k]) for k in ("loss", "pg_loss",
                                                                                         "prefix_loss"))
        stats["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if finite:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats["grad_norm"] = float(grad_norm)
        stats["finite"] = finite
        return stats
