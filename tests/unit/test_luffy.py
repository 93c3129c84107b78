"""method=luffy: one whole reference solution in each rollout group, shaping p/(p+gamma) scaled by its advantage."""

from pathlib import Path

import pytest
import torch

from trapo.advantages import group_advantages
from trapo.engines.local import collate_own
from trapo.guidance import GuidanceSchedule
from trapo.losses import policy_loss
from trapo.rollout import Prompt, rollout

ROOT = Path(__file__).resolve().parents[2]
EOS = 0


def compose(*overrides: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=list(overrides))


def make_prompt(pid: int) -> Prompt:
    return Prompt([pid + 1, 50], [100 + pid * 20 + i for i in range(10)] + [EOS], [3, 6], str(pid))


def wrong_unless_reference(texts, golds):
    # the policy's samples ("7 0") are wrong; the reference solution (its tokens start with 100+20*pid) is right
    return [1.0 if t.split()[0] == str(100 + int(g) * 20) else 0.0 for t, g in zip(texts, golds)]


def test_luffy_config():
    cfg = compose("method=luffy")
    m = cfg.method
    assert (m.name, m.guidance, m.off_policy, m.prefix_loss, m.gamma) == ("luffy", "none", True, "luffy", 0.1)
    assert m.baseline_includes_guided is True


@pytest.mark.parametrize("dedupe", [True, False])
def test_reference_member_gets_loss_scaled_by_its_advantage(dedupe):
    sched = GuidanceSchedule((8,), (0.0,), (), dedupe_prefix_loss=dedupe)
    prompts = [make_prompt(0), make_prompt(1)]
    samples, levels = rollout(prompts, sched, lambda xs, caps: [[7, EOS] for _ in xs],
                              lambda ids: " ".join(map(str, ids)), wrong_unless_reference, max_response_tokens=64,
                              adaptive=False, off_policy_reference=True)
    assert len(samples) == 16 and levels.tolist() == [0, 0]
    off = [s for s in samples if s.off_policy]
    assert [s.group for s in off] == [0, 1]
    for s in off:
        assert s.expert_ids == prompts[s.group].solution_ids and s.completion_ids == [] and s.reward == 1.0
        # micro-group dedupe must not drop the reference's loss (it is the 8th member of a one-round group)
        assert s.expert_weight == 1.0
    # on-policy members: no prefix, no prefix loss
    assert all(not s.guided and s.completion_ids for s in samples if not s.off_policy)

    # advantages from the mixed group: 7 wrong samples + the right reference -> mean 1/8
    rewards = torch.tensor([s.reward for s in samples])
    groups = torch.tensor([s.group for s in samples])
    in_base = torch.ones(len(samples), dtype=torch.bool)  # baseline_includes_guided: true
    for s, a in zip(samples, group_advantages(rewards, groups, in_base).tolist()):
        s.advantage = a
    assert all(s.advantage == pytest.approx(0.875) for s in off)
    assert all(s.advantage == pytest.approx(-0.125) for s in samples if not s.off_policy)

    batch = collate_own(samples, range(len(samples)), pad_id=EOS)  # what the update runs on: masks cover prefix + completion
    for i, s in enumerate(samples):
        n_prefix = len(s.expert_ids)
        if s.off_policy:
            assert batch.expert_scale[i].item() == pytest.approx(s.advantage)  # expert_scale = its advantage
            assert batch.expert_weight[i, :n_prefix].tolist() == [1.0] * n_prefix
            assert batch.policy_mask[i].sum() == 0 and not batch.unguided[i]
        else:
            assert batch.expert_scale[i].item() == 1.0 and batch.expert_weight[i].sum() == 0
            assert batch.policy_mask[i].sum() == len(s.completion_ids) and batch.unguided[i]


def test_luffy_loss_gradient_is_advantage_times_shaping():
    # d loss / d log p on an expert token = -A * gamma * p / (p + gamma)^2 / normalizer
    gamma, adv, norm = 0.1, 0.875, 10.0
    logp = torch.log(torch.tensor([[0.05, 0.5, 0.9]])).requires_grad_(True)
    out = policy_loss(logp, torch.tensor([adv]), torch.zeros(1, 3), torch.ones(1, 3) * adv, prefix_loss="luffy",
                      gamma=gamma, normalizer=norm)
    out.loss.backward()
    p = logp.detach().exp()
    assert torch.allclose(logp.grad, -adv * gamma * p / (p + gamma) ** 2 / norm, atol=1e-6)


def test_trainer_rl_step_with_off_policy_and_no_adaptive_schedule(tmp_path, monkeypatch):
    """Trainer._rl_step for luffy: a one-round group of train.group_size, the reference as its last member,
    prefix_loss=luffy with gamma, and expert-token statistics logged."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    from trapo.trainer import Trainer

    cfg = compose("method=luffy", "preset=smoke", "progress=false")
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.rl_schedule.group_sizes == (int(cfg.train.group_size),)
    tr._prepare()
    tr._setup()
    seen = {}

    def train_step(samples, **kw):
        seen["samples"], seen["kw"] = list(samples), kw
        return dict(loss=0.0, pg_loss=0.0, prefix_loss=0.0, ent_sum=0.0, ent_tok=1.0, exp_p_sum=1.0,
                    exp_tok=2.0, exp_low=1.0, lr=1e-3, grad_norm=0.0, finite=True)

    monkeypatch.setattr(tr.engine, "train_step", train_step)
    try:
        metrics = tr._rl_step(0)
    finally:
        tr.grader.close()
    samples, kw = seen["samples"], seen["kw"]
    g = int(cfg.train.group_size)
    assert len(samples) == g * int(cfg.train.prompts_per_step)
    assert kw["prefix_loss"] == "luffy" and kw["gamma"] == pytest.approx(0.1)
    for grp in range(int(cfg.train.prompts_per_step)):
        members = [s for s in samples if s.group == grp]
        assert len(members) == g and [s.off_policy for s in members] == [False] * (g - 1) + [True]
        ref = members[-1]
        assert ref.reward == 1.0 and ref.expert_weight == 1.0 and ref.completion_ids == []
        mean = sum(s.reward for s in members) / g
        assert ref.advantage == pytest.approx(1.0 - mean)
    assert metrics["train/expert_token_prob"] == pytest.approx(0.5)
    assert metrics["train/guidance_level_0"] == 1.0
