"""Batched autoregressive sampling with a KV cache, for any HF causal LM.

Where the time went on a CPU decides the design (measurements: docs/performance.md):

- Each distinct input is prefilled once: a GRPO step asks for G samples of every prompt, a TRAPO round for
  several samples of the same prompt + prefix. The unique inputs are left-padded into one batch and prefilled.
- With several samples per input, decoding reads each input's K/V once for all its samples
  (trapo.engines.shared_prefix): reading the cache is what bounds a decode step on a CPU.
- Otherwise the input's cache rows are copied out to its samples, in a cache preallocated for the whole
  generation where each step writes its token in place. The default cache concatenates (copies) all of K and
  V at every token, which was 40% of a decode step.
- A decode step of a Llama or Qwen2 model calls its layers directly (trapo.engines.decode_step): with few rows
  the model call's own per-call work was about a sixth of the step (10-32 rows, docs/performance.md).
- Rows that emitted EOS stop costing compute: they are dropped from the batch and the cache once enough of
  them have finished to pay for the copy that drops them (`DROP_FRACTION`).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from transformers.cache_utils import Cache

from trapo.engines import decode_step, shared_prefix
from trapo.engines.shared_prefix import PreallocatedLayer, SharedPrefixCache

# Read each distinct input's KV cache once for all its samples (trapo.engines.shared_prefix) when there are at
# least this many samples per input on average: below it the copies per sample are as fast or faster (measured by
# samples per input: docs/performance.md).
SHARED_PREFIX_MIN_SAMPLES = 4

# Finished rows are dropped once they are at least this share of the batch (or all of it). Dropping copies the
# cache of the rows that stay; keeping a finished row costs one row of every later step.
DROP_FRACTION = 0.25


def _new_cache(model, capacity: int) -> Cache | None:
    """A preallocated cache for models whose layers all use full attention; None lets the model pick its own."""
    if not shared_prefix.full_attention(model):
        return None
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(model.config.get_text_config(decoder=True).num_hidden_layers)])


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `logits` (any device), drawn from softmax(logits / T); T <= 0 is greedy.

    The randomness always comes from `generator` on the CPU, whatever the logits' device: a CUDA op refuses a
    CPU generator, and one seed must give the same samples on CPU and GPU. The draw is the exponential race
    argmax(p / E), E ~ Exp(1) i.i.d. per token, which is how torch.multinomial draws one sample on the CPU: the
    same generator gives the same tokens as `torch.multinomial(p, 1, generator=generator)` did (tested).
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    race = torch.empty(probs.shape, dtype=probs.dtype).exponential_(1, generator=generator)
    return (probs / race.to(probs.device)).argmax(-1)


def _unique_inputs(prompts: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Distinct inputs (first-seen order) and, for each prompt, the index of its distinct input."""
    index: dict[tuple[int, ...], int] = {}
    row_of = []
    for p in prompts:
        key = tuple(p)
        if len(key) == 0:
            raise ValueError("cannot sample from an empty prompt")
        row_of.append(index.setdefault(key, len(index)))
    return list(index), row_of


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [n, width] and an attention mask [n, capacity] with room for the new tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), capacity), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(p)
        attn[i, width - len(p) : width] = 1
    return ids, attn


@torch.no_grad()
def sample(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    eos_id: int | None,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Completions (token ids, EOS included when emitted) for each prompt; temperature 0 is greedy.

    `max_new_tokens` is one cap for all prompts or one per prompt (TRAPO's guided samples get what their
    prefix leaves of the response). `eos_id=None` never stops early: every completion has its cap's tokens
    (fixed-length benchmarks).
    """
    n = len(prompts)
    limits = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
    if len(limits) != n:
        raise ValueError(f"{len(limits)} max_new_tokens for {n} prompts")
    if any(m <= 0 for m in limits):  # rows with nothing to generate stay out of the batch
        keep = [i for i in range(n) if limits[i] > 0]
        outs: list[list[int]] = [[] for _ in range(n)]
        if keep:
            res = sample(model, [prompts[i] for i in keep], max_new_tokens=[limits[i] for i in keep], eos_id=eos_id,
                         pad_id=pad_id, temperature=temperature, generator=generator)
            for i, r in zip(keep, res):
                outs[i] = r
        return outs
    if n == 0:
        return []
    max_new_tokens = max(limits)
    device = next(model.parameters()).device
    unique, row_of = _unique_inputs(prompts)
    width = max(len(p) for p in unique)
    capacity = width + max_new_tokens
    ids, attn = _left_pad(unique, pad_id, capacity)
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn[:, :width].cumsum(-1) - 1).clamp(min=0)
    if n >= SHARED_PREFIX_MIN_SAMPLES * len(unique) and shared_prefix.supported(model):
        res = model(input_ids=ids, attention_mask=attn[:, :width], position_ids=pos, use_cache=True,
                    logits_to_keep=1)
        expand = torch.as_tensor(row_of, device=device)
        cache = SharedPrefixCache(res.past_key_values, attn[:, :width], expand, max_new_tokens)
        route = shared_prefix.active(model, cache)
    else:
        cache = _new_cache(model, capacity)
        res = model(input_ids=ids, attention_mask=attn[:, :width], position_ids=pos, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        cache = res.past_key_values
        # every sample of an input starts from that input's prefill
        expand = torch.as_tensor(row_of, device=device)
        cache.batch_select_indices(expand)
        route = contextlib.nullcontext()
    logits, attn, next_pos = res.logits[:, -1][expand], attn[expand], (pos[:, -1] + 1)[expand]
    length = width  # filled positions of the cache (and of attn)
    # tokens stay on the device until the end (-1: not generated); no per-step copy to Python lists
    out = torch.full((n, max_new_tokens), -1, dtype=torch.long, device=device)
    # one cap for all: rows stop by EOS (or the width of `out`) only
    limit = None if min(limits) == max_new_tokens else torch.as_tensor(limits, device=device)
    with route:
        _decode(model, cache, logits, attn, next_pos, length, out, eos_id, limit, temperature, generator)
    return [[t for t in row if t >= 0] for row in out.tolist()]


def _decode(model, cache, logits, attn, next_pos, length, out, eos_id, limit, temperature, generator):
    """Fill `out` [n, max new tokens]; a row stops at EOS or at its `limit` (None: the width of `out`)."""
    n, max_new_tokens = out.shape
    alive = torch.arange(n, device=out.device)  # original row of each batch row
    running = torch.ones(n, dtype=torch.bool, device=out.device)  # False: finished, still in the batch
    # the model's layers without its per-call machinery, same logits (trapo.engines.decode_step); None: model call
    step_fn = decode_step.make(model)
    for step in range(max_new_tokens):
        tok = _pick(logits, temperature, generator)
        out[alive[running], step] = tok[running]
        if step == max_new_tokens - 1:
            break
        if eos_id is not None or limit is not None:
            if eos_id is not None:
                running &= tok != eos_id
            if limit is not None:
                running &= limit[alive] > step + 1
            n_done = len(running) - int(running.sum())
            if n_done == len(running):
                break
            if n_done and n_done >= DROP_FRACTION * len(running):
                keep = running.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                alive, attn, next_pos, tok, running = alive[keep], attn[keep], next_pos[keep], tok[keep], running[keep]
        attn[:, length] = 1
        length += 1
        if step_fn is not None:
            logits = step_fn(tok, attn[:, :length], next_pos, cache)
        else:
            res = model(input_ids=tok.unsqueeze(-1), attention_mask=attn[:, :length],
                        position_ids=next_pos.unsqueeze(-1), past_key_values=cache, use_cache=True)
            cache = res.past_key_values
            logits = res.logits[:, -1]
        next_pos = next_pos + 1
