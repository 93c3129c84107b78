"""The sampler's random stream on any device (issue: the first sampled token on CUDA crashed).

Rollouts and sampled evaluations pass a CPU `torch.Generator` (seeded from (seed, step)); the logits live on the
model's device. CUDA refuses a CPU generator in `torch.multinomial`, so every draw must come from the CPU generator
whatever the device, and one seed must give the same tokens on CPU and GPU. CPU tests check the contract through
the meta device (its ops run no kernels) and a `torch.multinomial` that refuses a generator on another device, as
CUDA's does; the `gpu` tests run the real thing.
"""

from __future__ import annotations

import pytest
import torch

from trapo.engines import sampling


def _strict_multinomial(real):
    """torch.multinomial with CUDA's rule: the generator must be on the probabilities' device."""

    def multinomial(probs, num_samples, replacement=False, *, generator=None, out=None):
        if generator is not None and generator.device.type != probs.device.type:
            raise RuntimeError(f"Expected a '{probs.device.type}' device type for generator but found "
                               f"'{generator.device.type}'")
        return real(probs, num_samples, replacement, generator=generator)

    return multinomial


def test_pick_draws_from_a_cpu_generator_for_logits_on_another_device(monkeypatch):
    monkeypatch.setattr(torch, "multinomial", _strict_multinomial(torch.multinomial))
    logits = torch.randn(4, 11, device="meta")
    tok = sampling._pick(logits, 0.7, torch.Generator().manual_seed(0))
    assert tok.shape == (4,) and tok.device.type == "meta"


def test_pick_keeps_the_cpu_stream_of_torch_multinomial():
    """Same seed, same tokens as the sampler drew before (torch.multinomial on the CPU): runs stay reproducible."""
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(1))
    g_old, g_new = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for temperature in (1.0, 0.6, 1.7):
        for _ in range(20):
            probs = torch.softmax(logits / temperature, dim=-1)
            old = torch.multinomial(probs, 1, generator=g_old).squeeze(-1)
            assert torch.equal(sampling._pick(logits, temperature, g_new), old)


def test_pick_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20_000, 3)
    tok = sampling._pick(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=3).float() / len(tok)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015), freq


@pytest.mark.gpu
def test_same_seed_same_samples_on_cpu_and_cuda():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    prompts = [[1, 5, 7, 9], [1, 5, 7, 9], [2, 3], [4, 4, 4, 4, 4, 4]]
    outs = {}
    for device in ("cpu", "cuda"):
        outs[device] = sampling.sample(model.to(device).eval(), prompts, max_new_tokens=24, eos_id=None, pad_id=0,
                                       temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert outs["cuda"] == outs["cpu"]
