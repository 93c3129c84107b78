"""Batched autoregressive sampling with a KV cache, for any HF causal LM.

Prompts are left-padded into one batch and prefilled once; each step feeds only the new token. Rows
that emitted EOS are dropped from the batch and the cache, so finished sequences cost nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Completions (token ids, EOS included when emitted) for each prompt; temperature 0 is greedy."""
    n = len(prompts)
    out: list[list[int]] = [[] for _ in range(n)]
    if n == 0 or max_new_tokens <= 0:
        return out
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError("cannot sample from an empty prompt")
        ids[i, width - len(p):] = torch.as_tensor(list(p))
        attn[i, width - len(p):] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    res = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = res.past_key_values
    logits = res.logits[:, -1]
    alive = torch.arange(n, device=device)  # original row of each batch row
    next_pos = pos[:, -1] + 1
    gen_cpu = generator
    for step in range(max_new_tokens):
        tok = _pick(logits, temperature, gen_cpu)
        tok_list = tok.tolist()
        for row, t in zip(alive.tolist(), tok_list):
            out[row].append(t)
        if step == max_new_tokens - 1:
            break
        keep = tok != eos_id
        if not bool(keep.all()):
            if not bool(keep.any()):
                break
            idx = keep.nonzero().squeeze(-1)
            cache.batch_select_indices(idx)
            alive, attn, next_pos, tok = alive[idx], attn[idx], next_pos[idx], tok[idx]
        attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=-1)
        res = model(
            input_ids=tok.unsqueeze(-1),
            attention_mask=attn,
            position_ids=next_pos.unsqueeze(-1),
            past_key_values=cache,
            use_cache=True,
        )
        cache = res.past_key_values
        logits = res.logits[:, -1]
        next_pos = next_pos + 1
    return out
