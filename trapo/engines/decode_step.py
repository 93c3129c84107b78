"""One decode step of a Llama-family model, without transformers' per-call machinery.

With few rows a CPU decode step is mostly fixed cost, and TRAPO's later micro-group rounds run many such steps
(16, 32 rows against GRPO's 128: docs/performance.md). Part of that cost is what a model call does besides its
layers on every token: building the attention mask, output capture, keyword plumbing, the output dataclass
(~0.4-0.8 ms of a 4-8 ms step for the benchmark's 3M-parameter model at 10-32 rows, 2 threads:
`python experiments/benchmark_decode_step.py`, docs/performance.md).

`make(model)` returns a step that calls the model's own modules in the model's order, with the model's own
rotary and attention functions and the mask transformers would build, so its logits are bitwise those of
`model(...)` (tests/engine/test_decode_step.py). It exists only for the classes whose forward is exactly this;
any other model (or one with hooks that the step would skip) keeps the model call.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from trapo.engines import shared_prefix

# classes whose decoder forward is embed -> [norm, attention, residual, norm, MLP, residual] x L -> norm -> head
CLASSES = ("LlamaForCausalLM", "Qwen2ForCausalLM")

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], torch.Tensor]


def _hooked(module: torch.nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def supported(model) -> bool:
    """A transformers Llama or Qwen2 causal LM, full attention in every layer, through SDPA (or the shared-prefix
    attention that trapo.engines.shared_prefix routes to), with no hooks on the modules whose forward the step
    replaces."""
    if type(model).__name__ not in CLASSES or not type(model).__module__.startswith("transformers."):
        return False
    if model.config._attn_implementation not in ("sdpa", shared_prefix.NAME):
        return False
    if not shared_prefix.full_attention(model):
        return False
    return not any(_hooked(m) for m in (model, model.model, *model.model.layers))


def make(model) -> StepFn | None:
    """`step(tokens [B], attention_mask [B, L], positions [B], cache) -> logits [B, V]` for one new token per row,
    or None where `supported(model)` is false. The attention function is looked up on every call, so a step made
    outside `shared_prefix.active` follows it inside."""
    if not supported(model):
        return None
    rotary = sys.modules[type(model.model.layers[0].self_attn).__module__].apply_rotary_pos_emb
    cfg = model.config
    base = model.model

    def step(tokens, attention_mask, positions, cache):
        attend = ALL_ATTENTION_FUNCTIONS[cfg._attn_implementation]
        # transformers' mask for one query over the cache: none without padding, else the padding as bool
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        hidden = base.embed_tokens(tokens[:, None])
        cos, sin = base.rotary_emb(hidden, positions[:, None])
        rows = tokens.shape[0]
        for i, layer in enumerate(base.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(hidden)
            q = attn.q_proj(h).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(rows, 1, -1, attn.head_dim).transpose(1, 2)
            q, k = rotary(q, k, cos, sin)
            k, v = cache.update(k, v, i)
            out, _ = attend(attn, q, k, v, mask, dropout=attn.attention_dropout if attn.training else 0.0,
                            scaling=attn.scaling)
            hidden = hidden + attn.o_proj(out.reshape(rows, 1, -1).contiguous())
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return model.lm_head(base.norm(hidden))[:, -1]

    return step
