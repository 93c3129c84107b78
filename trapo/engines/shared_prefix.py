"""Decode-time attention that reads a shared input's KV cache once for all the samples drawn from it.

The G samples of a prompt (GRPO), or of a prompt + prefix (a TRAPO micro-group), attend to the same cached
input. A plain cache holds one copy per sample and every decode step reads all of them: on a CPU that read is
the bound of the step (memory bandwidth, not FLOPs). Here the input's K/V are kept once per distinct input
and each sample's own tokens separately; the scores over both parts go through one softmax, so the result is
ordinary attention over [input, own tokens] (tests/engine/test_local_engine.py checks tokens against HF `generate`).

Used by trapo.engines.sampling for the decode steps only (the prefill is the model's own attention), through
transformers' attention interface: while `active(model, cache)` is on, the model's attention layers call
`shared_prefix_attention`, which finds its layer's cache by `module.layer_idx`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer

NAME = "trapo_shared_prefix"
_ACTIVE: list["SharedPrefixCache"] = []  # the cache of the generation running now (innermost last)


class Groups:
    """Which distinct input each batch row samples from, and the rows of each input as a padded [U, G] table
    (slot B is a dummy row), rebuilt when rows leave the batch."""

    def __init__(self, group: torch.Tensor, n_inputs: int):
        self.set(group, n_inputs)

    def set(self, group: torch.Tensor, n_inputs: int) -> None:
        self.group = group
        b = len(group)
        counts = torch.bincount(group, minlength=n_inputs)
        width = max(1, int(counts.max())) if b else 1
        order = torch.argsort(group, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(group)
        slot[order] = torch.arange(b, device=group.device) - starts[group[order]]
        table = torch.full((n_inputs, width), b, dtype=torch.long, device=group.device)
        table[group, slot] = torch.arange(b, device=group.device)
        self.table = table  # [U, G] row of each (input, slot); b = padding
        self.flat = group * width + slot  # position of each row in the flattened table


class PreallocatedLayer(DynamicLayer):
    """One layer's KV cache with room for `capacity` positions, filled in place.

    `keys` / `values` are views of the filled part, so attention reads exactly what a growing cache holds.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = int(capacity)
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, dk = key_states.shape
        self._k = key_states.new_empty((b, h, self.capacity, dk))
        self._v = value_states.new_empty((b, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def _refresh_views(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length + n > self.capacity:
            raise RuntimeError(f"KV cache full: {self.length} + {n} > capacity {self.capacity}")
        self._k[:, :, self.length : self.length + n] = key_states
        self._v[:, :, self.length : self.length + n] = value_states
        self.length += n
        self._refresh_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) rows `indices`; only the filled positions are copied."""
        if not self.is_initialized:
            return
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty((len(indices),) + tuple(old.shape[1:]))
            new[:, :, : self.length] = old[:, :, : self.length].index_select(0, indices)
            setattr(self, name, new)
        self._refresh_views()



class SharedPrefixLayer(PreallocatedLayer):
    """One layer: the distinct inputs' K/V [U, Hkv, W, D] (left-padded, `mask` [U, W]) once, and each row's own
    tokens in a preallocated buffer [B, Hkv, capacity, D] (filled and row-selected as PreallocatedLayer does)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, groups: Groups, capacity: int):
        super().__init__(capacity)
        self.pk, self.pv, self.pmask, self.groups = keys, values, mask, groups
        b, (_, h, _, d) = len(groups.group), keys.shape
        self._k = keys.new_empty((b, h, self.capacity, d))
        self._v = values.new_empty((b, values.shape[1], self.capacity, values.shape[-1]))
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._refresh_views()

    def get_seq_length(self) -> int:
        return self.pk.shape[2] + self.length

    def get_max_length(self) -> int:
        return self.pk.shape[2] + self.capacity


class SharedPrefixCache(Cache):
    def __init__(self, prefill_cache, mask: torch.Tensor, group: torch.Tensor, capacity: int):
        self.groups = Groups(group, mask.shape[0])
        mask = mask.bool()
        layers = [SharedPrefixLayer(k, v, mask, self.groups, capacity) for k, v, *_ in prefill_cache]
        super().__init__(layers=layers)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self.groups.set(self.groups.group[indices], self.groups.table.shape[0])


def _by_input(x: torch.Tensor, groups: Groups) -> torch.Tensor:
    """Rows [B, ...] -> [U, G, ...] (padding rows are zeros)."""
    pad = torch.cat([x, x.new_zeros((1,) + tuple(x.shape[1:]))])
    return pad[groups.table]


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of the rows' new tokens over [their input's shared K/V, their own K/V]. Returns [B, q, H, D]."""
    layer = _ACTIVE[-1].layers[module.layer_idx]
    groups = layer.groups
    b, h, q, d = query.shape
    hkv = key.shape[1]
    scaling = d**-0.5 if scaling is None else scaling
    qg = query.reshape(b, hkv, h // hkv, q, d) * scaling
    # own tokens: every cached position is one of the row's tokens (queries are one new token each)
    s_own = torch.einsum("bkrqd,bkld->bkrql", qg, key)
    # the shared input: one matmul per distinct input over all of its rows
    s_in = torch.einsum("ugkrqd,ukpd->ugkrqp", _by_input(qg, groups), layer.pk)
    s_in = s_in.flatten(0, 1)[groups.flat]  # back to rows: [B, Hkv, r, q, W]
    s_in = s_in.masked_fill(~layer.pmask[groups.group][:, None, None, None, :], float("-inf"))
    probs = torch.softmax(torch.cat([s_in, s_own], dim=-1), dim=-1)
    w = layer.pk.shape[2]
    out = torch.einsum("bkrql,bkld->bkrqd", probs[..., w:], value)
    p_in = _by_input(probs[..., :w], groups)
    out = out + torch.einsum("ugkrqp,ukpd->ugkrqd", p_in, layer.pv).flatten(0, 1)[groups.flat]
    return out.reshape(b, h, q, d).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, shared_prefix_attention)


def full_attention(model) -> bool:
    """Every layer attends over the whole sequence (no sliding window): what the caches here hold."""
    cfg = model.config.get_text_config(decoder=True)
    layer_types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    return all(t == "full_attention" for t in layer_types)


def supported(model) -> bool:
    """Full attention in every layer, and attention layers that go through transformers' attention interface
    (the only way this function is reached; a model that bypasses it must not get this cache)."""
    can_route = getattr(type(model), "_can_set_attn_implementation", None)
    return full_attention(model) and bool(can_route and can_route())


@contextmanager
def active(model, cache: SharedPrefixCache):
    """Route `model`'s attention through `shared_prefix_attention` for `cache` (restored on exit)."""
    configs = list({id(c): c for c in (model.config, model.config.get_text_config(decoder=True))}.values())
    before = [c._attn_implementation for c in configs]
    for c in configs:  # not a mask implementation either: the model builds no mask
        c._attn_implementation_internal = NAME
    _ACTIVE.append(cache)
    try:
        yield
    finally:
        _ACTIVE.pop()
        for c, b in zip(configs, before):
            c._attn_implementation_internal = b
