"""The direct decode step (trapo.engines.decode_step) gives bitwise the logits of the model call it replaces, on
both cache layouts the sampler uses, with and without left padding; models it cannot stand in for keep the call."""

import contextlib

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from trapo.engines import decode_step, sampling, shared_prefix

PAD, EOS, VOCAB = 0, 1, 50

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def model_of(family: str, attn: str = "sdpa", kv_heads: int = 2):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=kv_heads, max_position_embeddings=128, eos_token_id=EOS, pad_token_id=PAD,
                  attn_implementation=attn)
    if family == "llama":  # biases in attention and MLP: the step must go through the modules, not bare weights
        return LlamaForCausalLM(LlamaConfig(attention_bias=True, mlp_bias=True, **common)).eval()
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


def prefill(model, prompts, samples_per_input: int, shared: bool, new_tokens: int):
    """The sampler's state after its prefill: cache, attention mask with room, next positions, last logits."""
    width = max(len(p) for p in prompts)
    ids, attn = sampling._left_pad(prompts, PAD, width + new_tokens)
    pos = (attn[:, :width].cumsum(-1) - 1).clamp(min=0)
    expand = torch.arange(len(prompts)).repeat_interleave(samples_per_input)
    if shared:
        res = model(input_ids=ids, attention_mask=attn[:, :width], position_ids=pos, use_cache=True)
        cache = shared_prefix.SharedPrefixCache(res.past_key_values, attn[:, :width], expand, new_tokens)
    else:
        res = model(input_ids=ids, attention_mask=attn[:, :width], position_ids=pos,
                    past_key_values=sampling._new_cache(model, width + new_tokens), use_cache=True)
        cache = res.past_key_values
        cache.batch_select_indices(expand)
    return cache, attn[expand].clone(), (pos[:, -1] + 1)[expand], res.logits[:, -1][expand], width


@torch.no_grad()
def decode_logits(model, prompts, *, direct: bool, shared: bool, steps: int = 6):
    cache, attn, pos, logits, length = prefill(model, prompts, 3, shared, steps)
    out = []
    with shared_prefix.active(model, cache) if shared else contextlib.nullcontext():
        if direct:  # made inside the route as the sampler makes it
            step = decode_step.make(model)
            assert step is not None
        for _ in range(steps):
            tok = logits.argmax(-1)
            attn[:, length] = 1
            length += 1
            if direct:
                logits = step(tok, attn[:, :length], pos, cache)
            else:
                logits = model(input_ids=tok[:, None], attention_mask=attn[:, :length], position_ids=pos[:, None],
                               past_key_values=cache, use_cache=True).logits[:, -1]
            pos = pos + 1
            out.append(logits)
    return torch.stack(out)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("lengths", [(5, 5), (2, 7, 4)], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_direct_step_logits_are_bitwise_the_model_calls(family, shared, lengths, kv_heads):
    model = model_of(family, kv_heads=kv_heads)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]
    ref = decode_logits(model, prompts, direct=False, shared=shared)
    got = decode_logits(model, prompts, direct=True, shared=shared)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_sampled_tokens_are_the_same_with_and_without_the_direct_step(family, monkeypatch):
    """Temperature 1 with a seeded generator: any change in the logits' bits would move some draw."""
    model = model_of(family)
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (3, 8, 5, 1)]
    prompts += [prompts[0]] * 4  # four samples of one input: the shared-prefix cache
    caps = [20, 11, 20, 6, 20, 20, 3, 20]

    def draw():
        return sampling.sample(model, prompts, max_new_tokens=caps, eos_id=EOS, pad_id=PAD, temperature=1.0,
                               generator=torch.Generator().manual_seed(5))

    calls = []
    real_make = decode_step.make
    monkeypatch.setattr(decode_step, "make", lambda m: calls.append(m) or real_make(m))
    direct = draw()
    assert calls and real_make(model) is not None
    monkeypatch.setattr(decode_step, "make", lambda m: None)
    assert direct == draw()


def test_models_the_step_cannot_stand_in_for_keep_the_model_call():
    assert decode_step.supported(model_of("qwen2")) and decode_step.supported(model_of("llama"))
    assert not decode_step.supported(model_of("qwen2", attn="eager"))  # another attention function and mask
    assert not decode_step.supported(model_of("mistral"))  # not a class whose forward the step copies
    hooked = model_of("llama")
    hooked.model.layers[1].register_forward_hook(lambda *a: None)
    assert decode_step.make(hooked) is None
    sliding = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                           sliding_window=4, max_window_layers=0, attn_implementation="sdpa"))
    assert not decode_step.supported(sliding)


def test_the_decode_step_benchmark_times_both_ways_and_refuses_different_logits(monkeypatch, capsys):
    """experiments/benchmark_decode_step.py, the source of docs/performance.md's per-step numbers: it prints each
    row count's two times, and stops when the direct step's logits are not the model call's."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from experiments import benchmark_decode_step as bench

    out = bench.main(["--quick", "--threads", "1"])
    assert set(out) == {4, 16} and all(v["call_ms"] > 0 and v["direct_ms"] > 0 for v in out.values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["16"]["ratio"] == out[16]["ratio"]

    real_make = decode_step.make

    def perturbed(model):
        step = real_make(model)
        return lambda *a: step(*a) + 1e-6
    monkeypatch.setattr(decode_step, "make", perturbed)
    with pytest.raises(SystemExit, match="differ from the model call"):
        bench.main(["--quick", "--threads", "1"])
