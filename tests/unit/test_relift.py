"""ReLIFT's pieces against hand-made cases: which prompts are hardest, the buffer (newest first, take the newest
sft_data_size, the rest waits), the SFT loss, the second AdamW swapped into a shared optimizer (the local engine's SFT step:
tests/engine/test_relift_local.py)."""

import math

import pytest
import torch

from baselines.relift.algorithm import HardBuffer, ReliftSettings, hardest_groups, sft_loss
from trapo.engines.openrlhf.optimizer_swap import OptimizerStateSwap

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- hardest questions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rewards, groups, want", [
    ([0, 0, 0, 1, 0, 0], [0, 0, 1, 1, 2, 2], [0, 2]),            # group 1 has one right answer
    ([0] * 8, [5] * 8, [5]),                                       # all 8 rollouts wrong
    ([1, 1, 1, 1], [0, 0, 1, 1], []),                              # all solved: not hard (and no RL signal)
    ([0, 1, 0, 0, 0, 0], [2, 2, 0, 0, 1, 1], [0, 1]),              # order of first appearance, not of ids
    ([0, 0, 0, 0.5], [3, 4, 3, 4], [3]),                           # interleaved groups; partial credit is not 0
    ([], [], []),
])
def test_hardest_groups(rewards, groups, want):
    assert hardest_groups(rewards, groups) == want


# ---- the buffer ---------------------------------------------------------------------------------------
def test_buffer_newest_first_takes_the_newest_size_rows():
    b = HardBuffer(3)
    b.add(["a", "b"])  # step 1: two hard prompts, in batch order
    assert len(b) == 2 and not b.ready and b.take() is None and b.rows == ["a", "b"]  # nothing removed
    b.add(["c"])  # step 2
    assert b.rows == ["c", "a", "b"] and b.ready
    assert b.take() == ["c", "a", "b"] and len(b) == 0
    b.add(["d", "e"])
    b.add(["f", "g", "h"])  # step 5: the newest step first, each step's rows in batch order
    assert b.rows == ["f", "g", "h", "d", "e"]
    assert b.take() == ["f", "g", "h"] and b.rows == ["d", "e"]  # the older rows wait
    assert b.take() is None  # two rows: not enough for another step


def test_buffer_over_a_run_at_most_one_sft_batch_per_step():
    """A run of steps (hard prompts per step as training-set indices): what each step's SFT batch is."""
    steps = [[1, 2], [3], [4, 5, 6, 7], [], [8, 9], [10, 11, 12, 13, 14, 15, 16]]
    want = [None, [3, 1, 2], [4, 5, 6], None, [8, 9, 7], [10, 11, 12]]
    b, got = HardBuffer(3), []
    for hard in steps:
        b.add(hard)
        got.append(b.take())  # the trainer takes at most once per RL step
    assert got == want
    assert b.rows == [13, 14, 15, 16]  # carried over (epochs too), four rows: one more batch next step


def test_buffer_state_round_trip_and_bad_size():
    b = HardBuffer(2, [4, 1, 7])
    c = HardBuffer(2)
    c.load_state_dict(b.state_dict())
    assert c.rows == [4, 1, 7] and c.take() == [4, 1]
    with pytest.raises(ValueError, match="sft_data_size"):
        HardBuffer(0)


# ---- the SFT loss --------------------------------------------------------------------------------------
def test_sft_loss_token_mean_nll_minus_entropy():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.125, 1.0, 1.0]]))
    ent = torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # 3 reference tokens; padding carries nothing
    out = sft_loss(logp, ent, mask, entropy_coef=0.1)
    nll = (math.log(2) + math.log(4) + math.log(8)) / 3
    assert out.nll.item() == pytest.approx(nll)
    assert out.entropy.item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(nll - 0.1 * 2.0)
    # a normaliser for the whole SFT batch (other micro-batches hold more tokens)
    assert sft_loss(logp, ent, mask, entropy_coef=0.0, normalizer=6.0).loss.item() == pytest.approx(nll / 2)
    assert sft_loss(logp, None, mask, entropy_coef=0.5).loss.item() == pytest.approx(nll)


def test_settings_from_the_method_config():
    from hydra import compose, initialize_config_dir

    from conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        paper = compose("config", overrides=["method=relift", "preset=paper"])
        mini = compose("config", overrides=["method=relift"])
        grpo = compose("config", overrides=["method=grpo"])
    s = ReliftSettings.from_config(paper)
    assert (s.sft_data_size, s.lr, s.betas, s.weight_decay, s.grad_clip, s.entropy_coef) == \
        (128, 5e-6, (0.9, 0.999), 0.01, 1.0, 0.001)
    assert s.max_tokens == 8192
    m = ReliftSettings.from_config(mini)
    assert m.sft_data_size == 16 and m.entropy_coef == 0.0  # preset=mini zeroes the entropy bonus of both steps
    assert ReliftSettings.from_config(grpo) is None
    assert paper.method.guidance == "none" and paper.method.prefix_loss == "none"  # the RL step is grpo's


# ---- a second AdamW inside one optimizer ----------------------------------------------------------------
def _grads(gen, params):
    return [torch.randn(p.shape, generator=gen) for p in params]


@pytest.mark.parametrize("kind", ["AdamW", "Adam"])
def test_state_swap_equals_two_optimizers(kind):
    """RL and SFT steps interleaved: one optimizer with the SFT state swapped in == two separate optimizers."""
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    cls = getattr(torch.optim, kind)
    rl_hyper = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-8)
    sft_hyper = dict(lr=3e-2, betas=(0.8, 0.999), weight_decay=0.01, eps=1e-6)
    # reference: two optimizers on the same parameters
    rl_ref, sft_ref = cls(a, **rl_hyper), cls(a, **sft_hyper)
    # one optimizer (as DeepSpeed has), the second AdamW's state swapped in for its steps
    shared = cls([{"params": [b[0]]}, {"params": [b[1]]}], **rl_hyper)
    swap = OptimizerStateSwap(**sft_hyper)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for kind_of_step in ["rl", "rl", "sft", "rl", "sft", "sft", "rl"]:
        for p, g in zip(a, _grads(gen_a, a)):
            p.grad = g
        (rl_ref if kind_of_step == "rl" else sft_ref).step()
        for p, g in zip(b, _grads(gen_b, b)):
            p.grad = g
        if kind_of_step == "rl":
            shared.step()
        else:
            with swap.active(shared):
                assert shared.param_groups[0]["lr"] == 3e-2
                shared.step()
        for p, q in zip(a, b):
            assert torch.equal(p.detach(), q.detach()), kind_of_step
    # outside the swap the optimizer is the RL one: its hypers and moments
    assert shared.param_groups[0]["lr"] == 1e-2 and shared.param_groups[1]["betas"] == (0.9, 0.95)
    assert torch.equal(shared.state[b[0]]["exp_avg"], rl_ref.state[a[0]]["exp_avg"])
    assert int(shared.state[b[0]]["step"]) == 4 and int(swap.state[0]["step"][0]) == 3


def test_state_swap_checkpoint_round_trip():
    torch.manual_seed(0)
    p = [torch.nn.Parameter(torch.randn(3))]
    opt = torch.optim.AdamW(p, lr=1e-2)
    swap = OptimizerStateSwap(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)
    p[0].grad = torch.ones(3)
    with swap.active(opt):
        opt.step()
    tensors, layout = swap.state_dict()
    import json

    layout = json.loads(json.dumps(layout))  # what state.json holds
    again = OptimizerStateSwap(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)
    again.load_state_dict(tensors, layout)
    q = [torch.nn.Parameter(p[0].detach().clone())]
    opt2 = torch.optim.AdamW(q, lr=1e-2)
    for o, s, x in ((opt, swap, p), (opt2, again, q)):
        x[0].grad = torch.full((3,), 0.5)
        with s.active(o):
            o.step()
    assert torch.equal(p[0].detach(), q[0].detach())
