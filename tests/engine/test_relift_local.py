"""ReLIFT's SFT step on the local engine against a plain computation of the same update."""

import copy

import pytest
import torch
from test_local_engine import EOS, Tok, rand_ids, tiny_model

from baselines.relift.algorithm import ReliftSettings
from baselines.relift.local import LocalRelift
from trapo.engines.local import LocalEngine
from trapo.rollout import Prompt

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- the local engine's SFT step ---------------------------------------------------------------------
def test_local_sft_step_matches_a_plain_update():
    """LocalRelift.sft_step == running each (prompt + reference) whole: token-mean NLL - coef x entropy over the
    batch's reference tokens, clipped, one step of its own AdamW; the RL optimizer's state is not touched."""
    model = tiny_model("qwen2", seed=3)
    ref = copy.deepcopy(model)
    eng = LocalEngine(model, Tok(), lr=1e-3, micro_batch_size=2)
    # eps 1e-6, not AdamW's 1e-8: with 1e-8 a gradient entry near 1e-8 turns float summation-order noise (the update
    # runs the LM head in chunks) into a ~1e-6 difference of that entry's step; the comparison is of the algorithm
    settings = ReliftSettings(sft_data_size=3, lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01, eps=1e-6,
                              grad_clip=0.5, entropy_coef=0.01, max_tokens=6)
    relift = LocalRelift(settings, eng)
    gen = torch.Generator().manual_seed(0)
    shared_prompt = rand_ids(gen, 5)
    prompts = [Prompt(shared_prompt, rand_ids(gen, 4) + [EOS], [], "1"),
               Prompt(rand_ids(gen, 7), rand_ids(gen, 9) + [EOS], [], "2"),  # longer than max_tokens: cut to 6
               Prompt(shared_prompt, rand_ids(gen, 2) + [EOS], [], "3")]  # same prompt as the first
    rl_state_before = copy.deepcopy(eng.optimizer.state_dict())
    st = relift.sft_step(prompts)

    # the plain computation
    ref.train()
    opt = torch.optim.AdamW(ref.parameters(), lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01, eps=1e-6)
    n_tok = sum(min(len(p.solution_ids), 6) for p in prompts)
    total = torch.zeros(())
    for p in prompts:
        sol = p.solution_ids[:6]
        ids = torch.tensor([p.prompt_ids + sol])
        logits = ref(input_ids=ids).logits[0, len(p.prompt_ids) - 1 : -1].float()
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, torch.tensor(sol)[:, None]).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
        total = total + (-logp.sum() - 0.01 * ent.sum()) / n_tok
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
    opt.step()

    assert st["finite"] and st["tokens"] == n_tok and relift.sft_steps == 1
    assert st["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
    assert st["nll"] - 0.01 * st["entropy"] == pytest.approx(float(total), rel=1e-5)
    worst = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), ref.parameters()))
    assert worst < 1e-6
    assert rl_state_before == eng.optimizer.state_dict()  # the RL AdamW has no moments yet, and still none
    assert all(p.grad is None for p in model.parameters())
