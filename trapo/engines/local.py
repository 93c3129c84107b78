"""The `local` engine: one process, a transformers model, CPU or one GPU.

It only moves data: sampling (trapo.engines.sampling), turning `Sample`s into padded tensors, and one
optimizer step on `trapo.losses.policy_loss`. The algorithm's decisions live in trapo/ (the step's glue, with
the LUFFY prefix scale and the loss diagnostics, in trapo.rl_step).

The update runs each distinct prompt once per step (`PromptStates`): the G samples of a group share one
forward and backward pass over their prompt and run only their own tokens (prefix + completion) on top of
its KV cache, in micro-batches bucketed by length. The gradient is that of running every sequence whole
(tests/engine/test_local_engine.py); only with dropout on would a prompt's samples share one dropout mask.

Its memory is bounded whatever the lengths and the vocabulary: micro-batches (and chunks of prompts) hold at most
`micro_batch_tokens` padded tokens as well as `micro_batch_size` sequences; log-probs and entropy come from the
hidden states through the LM head `logits_chunk_tokens` tokens at a time (`HeadLogprobs`), so full-vocabulary
logits never exist for a whole micro-batch; `gradient_checkpointing` recomputes each decoder layer in backward.
Log-probs are those of softmax(logits / T) at the rollouts' sampling temperature T (1 for SFT).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from trapo.engines import shared_prefix
from trapo.engines.optim import MasterWeightAdamW, make_optimizer
from trapo.engines.sampling import sample as sample_tokens
from trapo.rl_step import TOKEN_SUMS, LossSettings, TokenBatch, batch_loss, token_sums
from trapo.rollout import Sample


class _RecordLayer(DynamicLayer):
    """One layer's cache for the prompts' forward: keeps the layer's K/V as computed (no concatenation), so
    recomputing the layer (gradient checkpointing) stores the same tensors again instead of appending."""

    def update(self, key_states, value_states, *args, **kwargs):
        self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _PrefixLayer(DynamicLayer):
    """One layer's prompt K/V under the samples' own tokens: attention reads [prompt, own tokens] and the cache
    itself never changes, so a recomputed layer (gradient checkpointing) sees the same states."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class PromptStates:
    """Distinct prompts run once, with gradients, for a whole step (or a chunk of its prompts).

    A prompt's hidden states do not depend on what follows it (causal attention) and its tokens carry no loss,
    so its forward pass is shared by all its samples. Its KV cache (and the hidden state at its last token,
    which predicts each sample's first own token) become leaf tensors: each micro-batch of samples reads them by
    index and its backward pass accumulates their gradients; `backward()` then carries those gradients
    through the prompts' forward pass once. The gradient is exactly that of running every sequence whole.
    """

    def __init__(self, model, prompts: list[tuple[int, ...]], pad_id: int, device):
        self.model = model
        self.row = {p: i for i, p in enumerate(prompts)}
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left-padded: every prompt ends at column width - 1
            ids[i, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        self.mask = mask.to(device)
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.next_pos = pos[:, -1] + 1  # position of each prompt's first following token
        n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        cache = Cache(layers=[_RecordLayer() for _ in range(n_layers)])
        out = model.get_decoder()(input_ids=ids.to(device), attention_mask=self.mask, position_ids=pos,
                                  past_key_values=cache, use_cache=True)
        self._outputs = [out.last_hidden_state[:, -1]] + [t for layer in cache.layers
                                                           for t in (layer.keys, layer.values)]
        self._leaves = [t.detach().requires_grad_() for t in self._outputs]

    @property
    def last_hidden(self) -> torch.Tensor:
        return self._leaves[0]

    def cache(self, rows: torch.Tensor) -> Cache:
        """The KV cache of prompt `rows` (one per sample), differentiable back to the leaves."""
        kv = self._leaves[1:]
        # index_select: its backward sums repeated rows in a fixed order
        return Cache(layers=[_PrefixLayer(kv[2 * i].index_select(0, rows), kv[2 * i + 1].index_select(0, rows))
                             for i in range(len(kv) // 2)])

    def backward(self) -> None:
        """Pass the gradients gathered on the leaves through the prompts' forward pass."""
        pairs = [(t, leaf.grad) for t, leaf in zip(self._outputs, self._leaves) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
        self._outputs = self._leaves = []


@dataclass
class OwnTokens(TokenBatch):
    """A micro-batch of samples' own tokens (prefix + completion), right-padded: the loss's `TokenBatch` fields
    aligned with `ids` (the targets), plus the tokens, their mask and the row of each sample's prompt in its
    `PromptStates`."""

    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor
    rows: torch.Tensor  # [B]

    def to(self, device) -> "OwnTokens":
        return OwnTokens(**{k: v.to(device) for k, v in vars(self).items()})


def collate_own(samples: Sequence[Sample], rows: Sequence[int], pad_id: int) -> OwnTokens:
    width = max(1, max(len(s.expert_ids) + len(s.completion_ids) for s in samples))
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        c = len(s.expert_ids) + len(s.completion_ids)
        if c:
            ids[i, :c] = torch.as_tensor(s.expert_ids + s.completion_ids, dtype=torch.long)
        mask[i, :c] = 1
    return OwnTokens(**TokenBatch.columns(samples, width), ids=ids, mask=mask,
                     rows=torch.as_tensor(list(rows), dtype=torch.long))


def _logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool,
                          temperature: float = 1.0):
    """Log-prob of each target under softmax(logits / temperature) [..., V] (and the entropy of each
    distribution): the policy the rollouts sampled from (trapo.engines.sampling divides by T too)."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, ent


class HeadLogprobs(torch.autograd.Function):
    """Log-probs of `targets` [N] and entropies at temperature T from hidden states [N, H] through the LM head
    `weight` [V, H], `chunk` tokens at a time. A chunk's [chunk, V] logits are recomputed in backward and never
    kept, so the update's peak memory is O(chunk x V), not O(tokens x V) (the full-vocabulary fp32 logits, their
    log-softmax, its exp and the gradients of each are what ran out of memory on a 49k vocabulary). Backward
    by hand, with z = logits / T and p = softmax(z):  d log p_t / dz = onehot(t) - p,
    d entropy / dz = -p (log p + entropy)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk: int):
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        ent = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            lp, e = _logprobs_and_entropy(hidden[s : s + chunk] @ weight.T, targets[s : s + chunk], True,
                                          temperature)
            logp[s : s + chunk], ent[s : s + chunk] = lp, e
        ctx.save_for_backward(hidden, weight, targets, ent)
        ctx.temperature, ctx.chunk = temperature, chunk
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, targets, ent = ctx.saved_tensors
        t, chunk = ctx.temperature, ctx.chunk
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # summed over chunks in fp32
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            logp_all = torch.log_softmax((h @ weight.T).float() / t, dim=-1)
            p = logp_all.exp()
            gl, ge = g_logp[s : s + chunk, None], g_ent[s : s + chunk, None]
            # gz = p * (-gl - ge * (log p + entropy)) + gl * onehot, in place: two [chunk, V] tensors live
            gz = logp_all.add_(ent[s : s + chunk, None]).mul_(-ge).sub_(gl).mul_(p)
            gz.scatter_add_(-1, targets[s : s + chunk, None], gl)
            gz = gz.div_(t).to(h.dtype)
            grad_h[s : s + chunk] = gz @ weight
            grad_w.addmm_(gz.T.float(), h.float())
        return grad_h, grad_w.to(weight.dtype), None, None, None


def lm_head(model) -> torch.Tensor:
    """The LM head's weight [V, H]: the update computes logits as hidden @ weight.T, chunk by chunk."""
    head = model.get_output_embeddings()
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    scaled = [k for k in ("final_logit_softcapping", "logit_scale", "logits_scaling") if getattr(cfg, k, None)]
    if getattr(head, "bias", None) is not None or scaled:
        raise ValueError(f"the local engine's update needs logits = lm_head(hidden) without bias or scaling; "
                         f"{type(model).__name__} has {scaled or 'a bias'}")
    if not shared_prefix.full_attention(model):  # the prompts' cache (_PrefixLayer) has no sliding window
        raise ValueError(f"the local engine's update needs full attention in every layer; {type(model).__name__} "
                         f"has {sorted(set(cfg.layer_types))}")
    return head.weight


def own_logprobs(model, prompts: PromptStates, mb: OwnTokens, with_entropy: bool = True, *,
                 temperature: float = 1.0, chunk_tokens: int = 1024):
    """Log-prob (and entropy) at `temperature` of each of the samples' own tokens, aligned with `mb.ids` (0 on
    padding), on top of their prompts' cache. Only the non-padding tokens go through the LM head, `chunk_tokens`
    at a time (HeadLogprobs): full-vocabulary logits never exist for the whole micro-batch."""
    hidden = prompts.last_hidden.index_select(0, mb.rows).unsqueeze(1)  # predicts each sample's first own token
    t = mb.ids.shape[1]
    if t > 1:
        attn = torch.cat([prompts.mask[mb.rows], mb.mask[:, :-1]], dim=1)
        pos = prompts.next_pos[mb.rows].unsqueeze(1) + torch.arange(t - 1, device=attn.device)
        rest = model.get_decoder()(input_ids=mb.ids[:, :-1], attention_mask=attn, position_ids=pos,
                                   past_key_values=prompts.cache(mb.rows), use_cache=True).last_hidden_state
        hidden = torch.cat([hidden, rest], dim=1)
    keep = mb.mask.flatten().nonzero().squeeze(-1)
    logp, ent = HeadLogprobs.apply(hidden.flatten(0, 1).index_select(0, keep), lm_head(model),
                                   mb.ids.flatten().index_select(0, keep), float(temperature),
                                   max(1, int(chunk_tokens)))
    zeros = torch.zeros(mb.ids.numel(), dtype=torch.float32, device=mb.ids.device)
    logp = zeros.index_copy(0, keep, logp).view_as(mb.ids)
    ent = zeros.index_copy(0, keep, ent).view_as(mb.ids) if with_entropy else None
    return logp, ent


@torch.no_grad()
def forward_logprobs(model, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> torch.Tensor:
    """Log-prob of each response token given the prompt and the response before it, from one plain forward of the
    whole sequence (full-vocabulary logits: for checks and diagnostics, not the update). It is the reference that
    `own_logprobs` equals. Returns a CPU tensor [len(response_ids)]."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=next(model.parameters()).device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    n = len(prompt_ids)
    return logp[n - 1:].gather(-1, ids[0, n:, None])[:, 0].cpu()


def enable_checkpointing(model) -> None:
    """Activation recomputation per decoder layer (transformers' gradient checkpointing, non-reentrant). Its
    layers drop their KV cache under checkpointing, since a cache that grows would grow again on the replay;
    the update's caches (_RecordLayer, _PrefixLayer) give the same states on every call, so they stay."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for m in model.modules():
        if isinstance(m, GradientCheckpointingLayer):
            m._can_checkpoint_with_cache = True


def torch_threads(cfg) -> int:
    """`engine.num_threads`, or by default 1 for the tiny model and every core for a real one: the tiny model's
    matrices are too small to gain from splitting, and torch's threads spin on a core another job holds (the
    smoke multirun took 40.8 s with all threads against 20.1 s with one, one of the two cores busy)."""
    n = cfg.engine.get("num_threads")
    if n:
        return int(n)
    return 1 if cfg.model.kind == "tiny" else (os.cpu_count() or 1)


def warmup_constant(warmup_steps: int):
    """LR factor after `s` optimizer steps: linear warmup over `warmup_steps` updates, then constant 1."""
    w = int(warmup_steps)
    return lambda s: min(1.0, (s + 1) / w) if w > 0 else 1.0


def _fill(lengths: Sequence[int], max_rows: int, max_tokens: int | None) -> list[int]:
    """Sizes of consecutive groups of `lengths`: each at most `max_rows` rows and, padded to its longest row,
    at most `max_tokens` tokens (a longer row goes alone)."""
    sizes: list[int] = []
    rows = width = 0
    for n in lengths:
        n = max(1, n)
        if rows and (rows == max_rows or (max_tokens is not None and (rows + 1) * max(width, n) > max_tokens)):
            sizes.append(rows)
            rows = width = 0
        rows, width = rows + 1, max(width, n)
    return sizes + [rows] if rows else sizes


def prompt_chunks(samples: Sequence[Sample], max_prompts: int,
                  max_tokens: int | None = None) -> list[tuple[list[tuple[int, ...]], list[int]]]:
    """(distinct prompts, indices of their samples) in chunks of at most `max_prompts` prompts and, left-padded,
    `max_tokens` prompt tokens: the prompts of a chunk run together and their activations live until the
    chunk's samples are done (bounded memory)."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[tuple(s.prompt_ids)].append(i)
    keys, out, k = list(groups), [], 0
    for n in _fill([len(p) for p in keys], max(1, max_prompts), max_tokens):
        out.append((keys[k : k + n], [i for p in keys[k : k + n] for i in groups[p]]))
        k += n
    return out


def micro_batches(samples: Sequence[Sample], indices: Sequence[int], size: int,
                  max_tokens: int | None = None) -> list[list[int]]:
    """`indices` in micro-batches of at most `size` samples and `max_tokens` own tokens (prefix + completion)
    after padding, longest first: bucketing by length keeps padding low (prompts are not in the micro-batches,
    see PromptStates), and the token budget bounds a micro-batch's activations whatever the lengths."""
    order = sorted(indices, key=lambda i: -(len(samples[i].expert_ids) + len(samples[i].completion_ids)))
    lengths = [len(samples[i].expert_ids) + len(samples[i].completion_ids) for i in order]
    out, k = [], 0
    for n in _fill(lengths, max(1, size), max_tokens):
        out.append(order[k : k + n])
        k += n
    return out


class LocalEngine:
    def __init__(self, model, tokenizer, *, lr: float, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 micro_batch_size: int = 32, device: str | torch.device = "cpu", betas=(0.9, 0.999),
                 warmup_steps: int = 0, micro_batch_tokens: int | None = 4096, logits_chunk_tokens: int = 1024,
                 gradient_checkpointing: bool = False):
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.grad_clip = grad_clip
        # the update's memory: at most micro_batch_size sequences and micro_batch_tokens padded tokens per
        # forward/backward (None: no token budget), full-vocabulary logits for logits_chunk_tokens at a time
        # (defaults: conf/config.yaml's train.*)
        self.micro_batch_size = micro_batch_size
        self.micro_batch_tokens = None if micro_batch_tokens is None else int(micro_batch_tokens)
        self.logits_chunk_tokens = int(logits_chunk_tokens)
        lm_head(self.model)  # refuse a model whose logits are not hidden @ weight.T before any step
        if gradient_checkpointing:
            enable_checkpointing(self.model)
        self.warmup_steps = int(warmup_steps)
        self.optimizer = make_optimizer(model, lr=lr, weight_decay=weight_decay, betas=betas)
        # the LR schedule counts applied updates (a skipped non-finite step does not advance it); its state
        # is checkpointed, the shape (warmup_steps) comes from the config
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_constant(self.warmup_steps))
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # seconds spent per phase (generate, logprobs, backward, optimizer), summed over calls; callers reset it
        self.times: dict[str, float] = defaultdict(float)

    @contextmanager
    def _timed(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[phase] += time.perf_counter() - t0

    def reset_optimizer(self, lr: float) -> None:
        """Fresh AdamW moments and LR warmup (SFT->RL starts its RL phase like a new run from the SFT weights)."""
        group = self.optimizer.param_groups[0]
        self.optimizer = make_optimizer(self.model, lr=lr, weight_decay=group["weight_decay"], betas=group["betas"],
                                        masters=getattr(self.optimizer, "masters", None))  # the weights carry on
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_constant(self.warmup_steps))

    # ---- generation -------------------------------------------------------------------------
    def generate(self, inputs: list[list[int]], *, max_new_tokens: int | Sequence[int], temperature: float,
                 generator: torch.Generator | None = None, stop_at_eos: bool = True) -> list[list[int]]:
        """Completions of `inputs`, at most `max_new_tokens` each (one cap, or one per input);
        `stop_at_eos=False` always generates the cap (benchmarks)."""
        self.model.eval()
        limits = [int(max_new_tokens)] * len(inputs) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        # sort by length (identical inputs adjacent, they share a prefill) so rows of a chunk share their
        # padding; results go back in input order
        order = sorted(range(len(inputs)), key=lambda i: (len(inputs[i]), inputs[i]))
        outs: list[list[int]] = [[] for _ in inputs]
        chunk = max(1, self.micro_batch_size * 4)
        with self._timed("generate"):
            for start in range(0, len(order), chunk):
                idx = order[start : start + chunk]
                res = sample_tokens(self.model, [inputs[i] for i in idx], max_new_tokens=[limits[i] for i in idx],
                                    eos_id=self.eos_id if stop_at_eos else None, pad_id=self.pad_id,
                                    temperature=temperature, generator=generator)
                for i, r in zip(idx, res):
                    outs[i] = r
        return outs

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- update -----------------------------------------------------------------------------
    @property
    def master_weights(self) -> bool:
        """True when AdamW runs on fp32 master copies of a bf16/fp16 model (see MasterWeightAdamW)."""
        return isinstance(self.optimizer, MasterWeightAdamW)

    def _grads_to_masters(self) -> None:
        if self.master_weights:
            self.optimizer.accumulate_grads()

    def _updated_params(self) -> list[torch.Tensor]:
        """The tensors AdamW updates (their gradients are clipped): the fp32 masters, or the parameters."""
        return list(self.optimizer.masters) if self.master_weights else list(self.model.parameters())

    @staticmethod
    @torch.no_grad()
    def _accumulate(stats: dict, out, mb: OwnTokens, logp, ent, alpha: float) -> None:
        stats["loss"] += out.loss.item()
        stats["pg_loss"] += out.pg_loss.item()
        stats["prefix_loss"] += out.prefix_loss.item()
        for k, v in token_sums(logp, ent, mb, alpha).items():
            stats[k] += v

    def update_batches(self, samples: Sequence[Sample]):
        """(PromptStates, index list) of each micro-batch of a step, prompts run chunk by chunk; a chunk's
        `states.backward()` is the caller's once its micro-batches are done."""
        for prompts, chunk in prompt_chunks(samples, self.micro_batch_size, self.micro_batch_tokens):
            with self._timed("logprobs"):
                states = PromptStates(self.model, prompts, self.pad_id, self.device)
            yield states, micro_batches(samples, chunk, self.micro_batch_size, self.micro_batch_tokens)

    def logprobs(self, states: PromptStates, samples: Sequence[Sample], idx: Sequence[int], temperature: float = 1.0):
        """(micro-batch, log-probs, entropies) of samples `idx`: own tokens on top of their prompts' states."""
        mb = collate_own([samples[i] for i in idx], [states.row[tuple(samples[i].prompt_ids)] for i in idx],
                         self.pad_id).to(self.device)
        logp, ent = own_logprobs(self.model, states, mb, with_entropy=True, temperature=temperature,
                                 chunk_tokens=self.logits_chunk_tokens)
        return mb, logp, ent

    def train_step(self, samples: Sequence[Sample], *, normalizer: float, prefix_loss: str, alpha: float,
                   gamma: float, entropy_coef: float, temperature: float = 1.0) -> dict[str, float]:
        """One optimizer step over all samples (micro-batched; token sums over a shared normaliser). Log-probs and
        entropy are those of softmax(logits / temperature): the rollouts' sampling temperature for RL (the
        gradient is then that of the policy that sampled), 1 for SFT."""
        if not temperature > 0:
            raise ValueError(f"training temperature must be > 0 (the sampling policy's), got {temperature}")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = dict.fromkeys(("loss", "pg_loss", "prefix_loss", *TOKEN_SUMS), 0.0)
        loss = LossSettings(prefix_loss=prefix_loss, alpha=alpha, gamma=gamma, entropy_coef=entropy_coef)
        for states, batches in self.update_batches(samples):
            for idx in batches:
                with self._timed("logprobs"):
                    mb, logp, ent = self.logprobs(states, samples, idx, temperature)
                    out = batch_loss(logp, mb, loss, entropy=ent, normalizer=normalizer)
                with self._timed("backward"):
                    out.loss.backward()
                    self._grads_to_masters()
                self._accumulate(stats, out, mb, logp, ent, alpha)
            with self._timed("backward"):
                states.backward()
                self._grads_to_masters()
        with self._timed("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self._updated_params(), self.grad_clip)
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
