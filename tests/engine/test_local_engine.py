"""The local engine's fast paths compute exactly what the plain ones do.

- sampling (trapo.engines.sampling): shared prefill of identical inputs, the preallocated KV cache and the
  dropping of finished rows give HF `generate`'s greedy tokens;
- the update (LocalEngine.train_step): each distinct prompt run once per step, its samples' own tokens
  micro-batched by length, gives the loss, gradient and statistics of running every sequence whole.
"""

import copy
from dataclasses import dataclass
from typing import Sequence

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from trapo.engines import sampling
from trapo.engines.local import LocalEngine, micro_batches, prompt_chunks
from trapo.losses import policy_loss
from trapo.rollout import Sample

PAD, EOS, VOCAB = 0, 1, 40


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model(family: str = "qwen2", seed: int = 0, hidden: int = 32):
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, eos_token_id=EOS,
                  pad_token_id=PAD)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


class Tok:
    eos_token_id, pad_token_id = EOS, PAD

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def rand_ids(gen: torch.Generator, n: int) -> list[int]:
    return [int(x) for x in torch.randint(3, VOCAB, (n,), generator=gen)]


def hf_greedy(model, prompt: list[int], max_new: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    ids = out[0, len(prompt):].tolist()
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("drop_fraction", [0.0, sampling.DROP_FRACTION, 1.0])
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_sampler_matches_hf_greedy(family, drop_fraction, shared_prefix, monkeypatch):
    monkeypatch.setattr(sampling, "DROP_FRACTION", drop_fraction)
    # shared-prefix attention (one copy of each input's cache) or one cache row per sample
    monkeypatch.setattr(sampling, "SHARED_PREFIX_MIN_SAMPLES", 0 if shared_prefix else 10**9)
    model = tiny_model(family)
    with torch.no_grad():  # make EOS likely, so rows finish at different steps
        model.lm_head.weight[EOS] += 0.4 * model.lm_head.weight.norm(dim=1).mean()
    gen = torch.Generator().manual_seed(3)
    prompts = [rand_ids(gen, n) for n in (3, 7, 5, 1, 9, 4)]
    prompts += [prompts[1], prompts[0], prompts[1]]  # repeated inputs share one prefill
    outs = sampling.sample(model, prompts, max_new_tokens=16, eos_id=EOS, pad_id=PAD, temperature=0)
    refs = [hf_greedy(model, p, 16) for p in prompts]
    assert outs == refs
    assert len({len(o) for o in outs}) > 2  # rows finished at different steps


def test_sampler_without_eos_always_runs_full_length():
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.5 * model.lm_head.weight.norm(dim=1).mean()  # EOS comes early
    prompts = [[5, 6, 7], [8], [5, 6, 7]]
    outs = sampling.sample(model, prompts, max_new_tokens=9, eos_id=None, pad_id=PAD, temperature=1.0,
                           generator=torch.Generator().manual_seed(0))
    assert [len(o) for o in outs] == [9, 9, 9]
    stopped = sampling.sample(model, prompts, max_new_tokens=9, eos_id=EOS, pad_id=PAD, temperature=0)
    assert all(o[-1] == EOS and len(o) < 9 for o in stopped)


@pytest.mark.parametrize("shared_prefix", [True, False])
@pytest.mark.parametrize("eos", [EOS, None])
def test_sampler_per_row_caps_match_hf_greedy(shared_prefix, eos, monkeypatch):
    """One cap per prompt (TRAPO's guided samples get what their prefix leaves): each row is what HF's greedy
    decoding gives with that row's cap, rows with cap 0 get nothing."""
    monkeypatch.setattr(sampling, "SHARED_PREFIX_MIN_SAMPLES", 0 if shared_prefix else 10**9)
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.3 * model.lm_head.weight.norm(dim=1).mean()
    gen = torch.Generator().manual_seed(4)
    prompts = [rand_ids(gen, n) for n in (3, 7, 5, 4)]
    prompts += [prompts[0], prompts[0], prompts[1]]
    caps = [12, 3, 0, 7, 1, 12, 9]
    outs = sampling.sample(model, prompts, max_new_tokens=caps, eos_id=eos, pad_id=PAD, temperature=0)
    if eos is None:
        assert [len(o) for o in outs] == caps
    for p, c, o in zip(prompts, caps, outs):
        assert len(o) <= c
        if eos is not None:
            assert o == (hf_greedy(model, p, c) if c else [])
        elif c:  # without EOS the row is the reference's first c tokens, EOS included as a token
            full = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                  max_new_tokens=c, do_sample=False, eos_token_id=None, pad_token_id=PAD)
            assert o == full[0, len(p):].tolist()
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.sample(model, prompts, max_new_tokens=[1, 2], eos_id=EOS, pad_id=PAD)


def test_sampler_is_seeded_and_repeated_inputs_get_distinct_samples():
    model = tiny_model()
    prompts = [[4, 5, 6]] * 6 + [[7, 8]] * 2

    def draw(seed):
        return sampling.sample(model, prompts, max_new_tokens=12, eos_id=EOS, pad_id=PAD, temperature=1.0,
                               generator=torch.Generator().manual_seed(seed))

    before = model.config._attn_implementation
    a = draw(1)
    assert a == draw(1)
    assert model.config._attn_implementation == before  # shared-prefix attention is switched off again
    assert len({tuple(x) for x in a[:6]}) > 1  # one prefill, independent samples
    assert sampling.sample(model, [], max_new_tokens=4, eos_id=EOS, pad_id=PAD) == []
    with pytest.raises(ValueError, match="empty prompt"):
        sampling.sample(model, [[]], max_new_tokens=4, eos_id=EOS, pad_id=PAD)


def test_engine_generate_keeps_input_order_and_times_itself():
    engine = LocalEngine(tiny_model(), Tok(), lr=1e-3, micro_batch_size=1)  # chunks of 4 rows
    gen = torch.Generator().manual_seed(5)
    inputs = [rand_ids(gen, n) for n in (6, 2, 4, 2, 9, 3)]
    outs = engine.generate(inputs, max_new_tokens=8, temperature=0)
    assert outs == [hf_greedy(engine.model, x, 8) for x in inputs]
    assert engine.times["generate"] > 0
    full = engine.generate(inputs, max_new_tokens=5, temperature=0, stop_at_eos=False)
    assert all(len(o) == 5 for o in full)
    caps = [1, 5, 0, 3, 8, 2]
    capped = engine.generate(inputs, max_new_tokens=caps, temperature=0, stop_at_eos=False)
    assert [len(o) for o in capped] == caps and capped[1] == full[1]


# ------------------------------------------------------------------------------------------------ update
# The whole-sequence reference the engine's update must equal: every sample run as one padded sequence.
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
    width = max(len(s.prompt_ids) + len(s.expert_ids) + len(s.completion_ids) for s in samples)
    n = len(samples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    rl = torch.zeros((n, width))
    pre = torch.zeros((n, width))
    for i, s in enumerate(samples):
        a, b = len(s.prompt_ids), len(s.prompt_ids) + len(s.expert_ids)
        c = b + len(s.completion_ids)
        ids[i, :c] = torch.tensor(s.prompt_ids + s.expert_ids + s.completion_ids, dtype=torch.long)
        attn[i, :c] = 1
        pre[i, a:b] = s.expert_weight
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

    Whole sequences in one pass: the plain reference for `own_logprobs` (which the engine uses). Only one
    micro-batch's logits exist at a time; the caller chunks the batch.
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


def make_samples(seed: int = 1, prompt_lengths=(5, 9, 3)) -> list[Sample]:
    """Prompts of different lengths, each with unguided, guided (prefix) and whole-solution samples."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for g, n_prompt in enumerate(prompt_lengths):
        prompt = rand_ids(gen, n_prompt)
        for j in range(6):
            prefix = rand_ids(gen, 2 + j) if j >= 3 else []
            completion = [] if j == 5 else rand_ids(gen, int(torch.randint(1, 12, (1,), generator=gen)))
            out.append(Sample(g, int(j >= 3), prompt, prefix, completion,
                              advantage=float(torch.randn(1, generator=gen)),
                              expert_weight=1.0 if j in (3, 5) else 0.0, off_policy=(j == 5)))
    return out


def whole_sequence_reference(model, samples, normalizer, **kw):
    """Loss, gradient and statistics from running every sequence whole, in one batch."""
    model = copy.deepcopy(model).train()
    b = collate(samples, PAD)
    logp, ent = token_logprobs(model, b.input_ids, b.attention_mask)
    out = policy_loss(logp, b.advantages, b.rl_mask, b.prefix_mask * b.prefix_scale[:, None], entropy=ent,
                      normalizer=normalizer, **kw)
    out.loss.backward()
    unguided = b.rl_mask * b.unguided[:, None]
    expert = b.prefix_mask > 0
    stats = {"loss": out.loss.item(), "entropy": float((ent * unguided).sum() / unguided.sum()),
             "expert_p": float(logp.exp()[expert].mean())}
    return stats, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("micro_batch_size", [1, 4, 64])
@pytest.mark.parametrize("prefix_loss", ["trsft", "luffy"])
def test_update_equals_whole_sequences(micro_batch_size, prefix_loss, monkeypatch):
    model, samples = tiny_model(), make_samples()
    kw = dict(prefix_loss=prefix_loss, alpha=0.1, gamma=0.1, entropy_coef=0.01)
    ref_stats, ref_grads = whole_sequence_reference(model, samples, 100.0, **kw)

    engine = LocalEngine(copy.deepcopy(model), Tok(), lr=1e-3, micro_batch_size=micro_batch_size)
    seen = {}
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *a, **k):
        params = list(params)
        seen["grads"] = [p.grad.clone() for p in params]
        return clip(params, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    st = engine.train_step(samples, normalizer=100.0, **kw)
    assert st["finite"] and st["loss"] == pytest.approx(ref_stats["loss"], abs=1e-6)
    assert st["ent_sum"] / st["ent_tok"] == pytest.approx(ref_stats["entropy"], rel=1e-5)
    assert st["exp_p_sum"] / st["exp_tok"] == pytest.approx(ref_stats["expert_p"], rel=1e-5)
    for got, want in zip(seen["grads"], ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert all(engine.times[k] > 0 for k in ("logprobs", "backward", "optimizer"))


def test_micro_batches_bucket_by_length_and_prompts_are_chunked():
    samples = make_samples()
    chunks = prompt_chunks(samples, 2)
    assert [len(p) for p, _ in chunks] == [2, 1]
    assert sorted(i for _, idx in chunks for i in idx) == list(range(len(samples)))
    for prompts, idx in chunks:
        assert {tuple(samples[i].prompt_ids) for i in idx} == set(prompts)
    batches = micro_batches(samples, range(len(samples)), 4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(samples))) and max(len(b) for b in batches) == 4
    own = [len(samples[i].expert_ids) + len(samples[i].completion_ids) for i in flat]
    assert own == sorted(own, reverse=True)


def test_update_is_bitwise_repeatable_with_threads(monkeypatch):
    """Resuming from a checkpoint must be bit-identical (tests/e2e/test_resume.py): a prompt's rows are gathered with
    index_select, whose backward adds repeated rows in a fixed order (advanced indexing's does not, on threads)."""
    torch.set_num_threads(2)
    # big enough for the backward of a gather to be split across threads
    model, samples = tiny_model(hidden=256), make_samples(prompt_lengths=(60, 70)) * 4
    grads = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *a, **k):
        params = list(params)
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        return clip(params, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    for _ in range(4):
        engine = LocalEngine(copy.deepcopy(model), Tok(), lr=1e-3, micro_batch_size=8)
        engine.train_step(samples, normalizer=100.0, prefix_loss="trsft", alpha=0.1, gamma=0.1, entropy_coef=0.0)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])


# ------------------------------------------------------------------------------------------------ memory
def step_grads(engine, samples, **kw):
    """The gradient a train_step applies (read at the clip) and its stats."""
    seen = {}
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *a, **k):
        params = list(params)
        seen["grads"] = [p.grad.clone() for p in params]
        return clip(params, *a, **k)

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        st = engine.train_step(samples, **kw)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    return st, seen["grads"]


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("chunk,budget,checkpointing", [(1, None, False), (5, 12, False), (64, 40, True),
                                                        (4096, None, True), (7, 1, True)])
def test_chunked_budgeted_checkpointed_update_equals_whole_sequences(family, chunk, budget, checkpointing):
    """Logits chunk by chunk through the LM head (recomputed in backward), micro-batches bounded by a token budget
    and activation recomputation give today's gradient: every sequence whole, full-vocabulary log-softmax, with
    the entropy bonus, TrSFT on prefix tokens and LUFFY's off-policy scale."""
    model, samples = tiny_model(family), make_samples()
    kw = dict(prefix_loss="trsft", alpha=0.1, gamma=0.1, entropy_coef=0.01)
    ref_stats, ref_grads = whole_sequence_reference(model, samples, 100.0, **kw)
    engine = LocalEngine(copy.deepcopy(model), Tok(), lr=1e-3, micro_batch_size=6, micro_batch_tokens=budget,
                         logits_chunk_tokens=chunk, gradient_checkpointing=checkpointing)
    st, grads = step_grads(engine, samples, normalizer=100.0, **kw)
    assert st["loss"] == pytest.approx(ref_stats["loss"], abs=1e-6)
    assert st["ent_sum"] / st["ent_tok"] == pytest.approx(ref_stats["entropy"], rel=1e-5)
    assert st["exp_p_sum"] / st["exp_tok"] == pytest.approx(ref_stats["expert_p"], rel=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_token_budget_bounds_micro_batches_and_prompt_chunks():
    samples = make_samples(prompt_lengths=(5, 9, 3, 12, 4))
    own = [len(s.expert_ids) + len(s.completion_ids) for s in samples]
    for budget in (1, 10, 25, 60):
        batches = micro_batches(samples, range(len(samples)), 4, budget)
        assert sorted(i for b in batches for i in b) == list(range(len(samples)))
        for b in batches:  # padded to the longest row; a row longer than the budget goes alone
            assert len(b) <= 4 and (len(b) * max(own[i] for i in b) <= budget or len(b) == 1)
        chunks = prompt_chunks(samples, 3, budget)
        assert sorted(i for _, idx in chunks for i in idx) == list(range(len(samples)))
        assert all(len(p) <= 3 and (len(p) * max(map(len, p)) <= budget or len(p) == 1) for p, _ in chunks)
    assert len(micro_batches(samples, range(len(samples)), 4, 10**6)) == -(-len(samples) // 4)  # the cap alone


def test_update_never_holds_full_vocabulary_logits_of_a_micro_batch():
    """No tensor with the vocabulary as its last dimension has more than `logits_chunk_tokens` rows, forward or
    backward: the update's memory grows with the chunk, not with the micro-batch's tokens."""
    from torch.utils._python_dispatch import TorchDispatchMode

    vocab, chunk = 500, 8

    class LargestVocabTensor(TorchDispatchMode):
        rows = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if (isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == vocab
                        and t.untyped_storage().data_ptr() != weight_ptr):  # the LM head's weight.T is no logits
                    LargestVocabTensor.rows = max(LargestVocabTensor.rows, t.numel() // vocab)
            return out

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=EOS,
                                         pad_token_id=PAD))
    weight_ptr = model.lm_head.weight.untyped_storage().data_ptr()
    samples = make_samples()
    n_tokens = sum(len(s.expert_ids) + len(s.completion_ids) for s in samples)
    engine = LocalEngine(model, Tok(), lr=1e-3, micro_batch_size=64, logits_chunk_tokens=chunk)
    with LargestVocabTensor():
        engine.train_step(samples, normalizer=100.0, prefix_loss="trsft", alpha=0.1, gamma=0.1, entropy_coef=0.01)
    assert n_tokens > 4 * chunk and LargestVocabTensor.rows <= chunk


def test_the_update_refuses_a_model_with_sliding_window_layers():
    # The update replays each prompt's states from a cache (_PrefixLayer) that has no sliding window: a model
    # with sliding-window layers would get other log-probs in the update than in its own forward.
    import pytest
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trapo.engines.local import lm_head

    def model(**kw):
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1, **kw))

    assert lm_head(model()).shape == (32, 16)
    with pytest.raises(ValueError, match="full attention in every layer.*sliding_attention"):
        lm_head(model(use_sliding_window=True, sliding_window=4, max_window_layers=1))
