"""ReLIFT on OpenRLHF's DeepSpeed actor (CPU, gloo, ZeRO-0, 2 and 3, fp32) against the local engine's ReLIFT.

Three prompts x 8 samples from GRPO's rollout agent with scripted rewards -- prompts 0 and 2 wrong in all 8
rollouts (hardest questions), prompt 1 half right -- go through OpenRLHF's own path (responses ->
`_process_response_into_experience` -> replay buffer -> `ActorPPOTrainer.ppo_train` with TRAPO's `training_step`
and ReLIFT's hooks), with the launcher's flags parsed by OpenRLHF's parser and method.relift.sft_data_size=2:
after the RL update the two hardest questions make one SFT step (two micro-batches of one row, the boundary on
the second), with ReLIFT's own AdamW state swapped into DeepSpeed's optimizer.

The same batch on the local engine: `LocalEngine.train_step` (the RL step), then `LocalRelift.after_rl_step`.
Compared: the parameters after both steps, the SFT loss, the buffer and counters, the RL optimizer's state (not
touched by the SFT step), DeepSpeed's counters and LR schedule (as the RL step left them), the metric names, and
the ReLIFT state saved in and loaded from a checkpoint directory.

ZeRO-3 partitions the module's parameters (each rank holds a flat slice; `full_params` gathers them) and lists its
optimizer's parameters in `param_groups` only inside its own step: the RL optimizer's state is read by its keys.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from openrlhf_support import compose, cpu_cuda_shims, openrlhf_modules, require_openrlhf

require_openrlhf()
pytestmark = pytest.mark.openrlhf

agent_mod, relift_mod, logger_mod, swap_mod = openrlhf_modules(
    "trapo.engines.openrlhf.agent", "baselines.relift.openrlhf", "trapo.engines.openrlhf.mlflow_logger",
    "trapo.engines.openrlhf.optimizer_swap")

from test_openrlhf_parity import CPUStrategy as ParityStrategy  # noqa: E402
from test_openrlhf_parity import actor_mod  # noqa: E402
from test_openrlhf_parity import (_sample_from_response, actor_trainer, dist_env, fill_replay_buffer,  # noqa: E402
                                  launch_args)

from trapo.data.synthetic import make_split  # noqa: E402
from trapo.engines.local import LocalEngine  # noqa: E402
from trapo.models.tiny import PROMPT_TEMPLATE, build_tiny_model  # noqa: E402
from trapo.prompts import build_prompt  # noqa: E402
from baselines.relift import ACTOR_HOOKS  # noqa: E402
from baselines.relift.algorithm import ReliftSettings  # noqa: E402
from baselines.relift.local import LocalRelift  # noqa: E402

TOL = 1e-5
MAX_NEW = 24
LR = 1e-4  # Adam's first step is ~lr per entry (and lr x noise/eps where a gradient is near eps): differences scale with lr
# the SFT step's Adam eps: at 1e-8 a gradient entry near eps turns summation-order noise (~1e-9) into a 2e-5 difference
# of the update (lr / 4 eps per unit of gradient); at 1e-6 that is 100 times less, and the step still moves by ~lr
SFT_EPS = 1e-6


class CPUStrategy(ParityStrategy):
    """The parity test's CPU strategy, without its gradient recording (ZeRO-2 keeps gradients partitioned)."""

    def optimizer_step(self, optimizer, model, scheduler, name="model", **kwargs):
        ParityStrategy.__mro__[1].optimizer_step(self, optimizer, model, scheduler, name=name, **kwargs)


def full_params(ds) -> list[torch.Tensor]:
    """Copies of the module's whole parameters (ZeRO-3 keeps only partitions outside a gather)."""
    params = list(ds.module.parameters())
    if ds.zero_optimization_stage() != 3:
        return [p.detach().clone() for p in params]
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        return [p.detach().clone() for p in params]


def optimizer_state(opt) -> dict[int, dict]:
    """Copies of the optimizer's per-parameter state by the id of its key: ZeRO-0/2 list their parameters in
    param_groups, ZeRO-3 keys the state by its flat fp32 partitions and empties param_groups between steps."""
    return {id(p): copy.deepcopy(dict(s)) for p, s in opt.state.items()}


REWARDS = [[0.0] * 8, [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0], [0.0] * 8]  # prompts 0 and 2: hardest


def _rollout(cfg, tok, problems):
    g = torch.Generator().manual_seed(0)
    schedule = agent_mod.AgentExecutor(cfg=cfg).schedule
    assert schedule.group_sizes == (8,)  # GRPO's one round

    def generate(inputs, caps):
        outs = []
        for _, cap in zip(inputs, caps):
            n = min(int(torch.randint(3, MAX_NEW, (1,), generator=g)), cap - 1)
            outs.append(torch.randint(3, tok.vocab_size, (n,), generator=g).tolist() + [tok.eos_token_id])
        return outs

    out, texts = [], []
    for i, p in enumerate(problems):
        text = build_prompt(p.question, tok, PROMPT_TEMPLATE)
        texts.append(text)
        prompt = agent_mod.tokenize_prompt(tok, text, p.base_solution, p.answer)
        rewards = iter(REWARDS[i])
        out += agent_mod.run_group(
            prompt, cfg, schedule, generate, lambda ids: tok.decode(ids, skip_special_tokens=True),
            lambda t, gold: [next(rewards) for _ in t], prompt_text=text,
            label=agent_mod.encode_label(p.answer, p.base_solution, row=i), group_id=i, max_new_tokens=MAX_NEW)
    return out, texts


# (ZeRO stage, rollout temperature): the RL update scores at the rollout's temperature on both engines, the SFT step
# at 1 on both
@pytest.fixture(scope="module", params=[pytest.param((0, 1.0), id="zero0"), pytest.param((2, 0.7), id="zero2-T0.7"),
                                        pytest.param((3, 1.0), id="zero3", marks=pytest.mark.zero3)])
def both(request):
    stage, temperature = request.param
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = compose("engine=openrlhf", "preset=smoke", "method=relift", f"rollout.max_new_tokens={MAX_NEW}",
                  f"rollout.temperature={temperature}",
                  "train.prompts_per_step=3", f"train.lr={LR}", "method.relift.sft_data_size=2",
                  "method.relift.lr=2e-4", "method.relift.grad_clip=0.5", f"method.relift.eps={SFT_EPS}",
                  f"engine.zero_stage={stage}",
                  "engine.micro_train_batch_size=1", "engine.micro_rollout_batch_size=4",
                  "engine.num_nodes=1", "engine.actor_gpus_per_node=1", "engine.vllm_num_engines=1",
                  "engine.vllm_tensor_parallel_size=1", "engine.launcher=local", "engine.attn_implementation=eager",
                  "engine.packing_samples=false", "engine.gradient_checkpointing=false", "resume=never")
    model_dir = build_tiny_model(dict(cfg.model.arch), dict(cfg.model.pretrain), progress=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    problems = make_split(3, 2, 3, seed=5)
    responses, texts = _rollout(cfg, tok, problems)
    samples = [_sample_from_response(r) for r in responses]
    settings = ReliftSettings.from_config(cfg)
    assert settings.sft_data_size == 2 and settings.entropy_coef == 0.001  # smoke keeps the entropy bonus

    # ---- the local engine: the RL step, then ReLIFT's hook ----
    local_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    start = [p.detach().clone() for p in local_model.parameters()]
    engine = LocalEngine(local_model, tok, lr=LR, grad_clip=float(cfg.train.grad_clip), micro_batch_size=5)
    engine.train_step(samples, normalizer=float(len(samples) * MAX_NEW), prefix_loss="none", alpha=0.1, gamma=0.1,
                      entropy_coef=float(cfg.method.entropy_coef), temperature=temperature)
    local_after_rl = [p.detach().clone() for p in local_model.parameters()]
    relift = LocalRelift(settings, engine)
    prompts = {i: agent_mod.tokenize_prompt(tok, texts[i], problems[i].base_solution, problems[i].answer)
               for i in range(3)}
    local_metrics = relift.after_rl_step([0, 1, 2], samples, lambda i: prompts[i])

    # ---- OpenRLHF ----
    args = launch_args(cfg, "/tmp/trapo-relift-run", model_dir, actor_hooks=ACTOR_HOOKS)
    args.local_rank = -1
    dist_env(29534)
    strategy = CPUStrategy(seed=args.train.seed, max_norm=args.actor.max_norm,
                           micro_train_batch_size=args.train.micro_batch_size, train_batch_size=args.train.batch_size,
                           zero_stage=args.ds.zero_stage, args=args)
    strategy.setup_distributed()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    actor, trainer = actor_trainer(strategy, args, model, tok, cfg, hooks=[relift_mod.ActorRelift])
    assert [type(h) for h in trainer.hooks] == [relift_mod.ActorRelift]
    trainer.relift = trainer.hooks[0]  # the test's handle on the hook
    trainer.dataloader_pin_memory = False
    fill_replay_buffer(trainer, actor, args, responses, tok)

    ds = actor.model
    seen = {}
    real_sft = trainer.relift.sft_step

    def sft_step(tr, rows):  # what the RL step left, just before the SFT step
        seen["rows"] = [r["row"] for r in rows]
        seen["params"] = full_params(ds)
        seen["rl_state"] = optimizer_state(ds.basic_optimizer)
        seen["counters"] = (ds.micro_steps, ds.global_steps, ds.lr_scheduler.get_last_lr())
        return real_sft(tr, rows)

    trainer.relift.sft_step = sft_step
    with cpu_cuda_shims("cpu"):
        status = trainer.ppo_train(0.0)
    orl = logger_mod.trapo_metrics(status, n_levels=1, log_levels=False)
    return SimpleNamespace(cfg=cfg, local_model=local_model, local_after_rl=local_after_rl, start=start,
                           local_metrics=local_metrics, relift=relift, trainer=trainer, ds=ds, status=status,
                           orl=orl, seen=seen, after=full_params(ds))


def test_rl_step_before_the_sft_step_matches(both):
    b = both
    worst = max(float((p - q).abs().max()) for p, q in zip(b.seen["params"], b.local_after_rl))
    assert worst <= TOL


def test_hardest_questions_make_one_sft_batch_in_batch_order(both):
    assert both.seen["rows"] == [0, 2]
    assert both.trainer.relift.buffer.rows == [] and both.trainer.relift.sft_steps == 1
    assert both.relift.buffer.rows == [] and both.relift.sft_steps == 1


def test_parameters_after_the_sft_step_match(both):
    b = both
    moved = max(float((p - q).abs().max()) for p, q in zip(b.local_model.parameters(), b.local_after_rl))
    worst = max(float((p - q.detach()).abs().max()) for p, q in zip(b.after, b.local_model.parameters()))
    print(f"max |param diff| after RL + SFT = {worst:.3e} (largest SFT update {moved:.3e})")
    assert moved > 10 * TOL  # the SFT step moved the weights
    assert worst <= TOL


def test_rl_optimizer_and_deepspeed_counters_are_as_the_rl_step_left_them(both):
    b = both
    opt = b.ds.basic_optimizer  # ZeRO-2 and 3: its parameters are flat fp32 partitions
    now = optimizer_state(opt)
    assert b.seen["rl_state"] and all(b.seen["rl_state"].values())  # the RL step left moments to compare
    assert now.keys() == b.seen["rl_state"].keys()
    for n, (i, before) in enumerate(b.seen["rl_state"].items()):
        assert now[i].keys() == before.keys(), n
        for k, v in before.items():
            assert torch.equal(torch.as_tensor(now[i][k]), torch.as_tensor(v)), f"RL state {n}: {k} moved"
    assert opt.param_groups[0]["lr"] == LR and opt.param_groups[0]["weight_decay"] == 0.0
    micro, glob, lr = b.seen["counters"]
    assert (b.ds.micro_steps, b.ds.global_steps, b.ds.lr_scheduler.get_last_lr()) == (micro, glob, lr)
    assert b.ds.micro_steps == 24 and b.ds.gradient_clipping() == 1.0
    assert getattr(b.ds.optimizer, "clip_grad", 1.0) == 1.0
    assert b.ds._is_gradient_accumulation_boundary is None
    # ReLIFT's own AdamW: one step, its own hypers
    swap = b.trainer.relift.swap
    assert swap.hyper["lr"] == 2e-4 and swap.hyper["weight_decay"] == 0.01
    # (DeepSpeed's FusedAdam counts a group's steps in the state of the group's last parameter)
    sft_steps = max(int(e["step"][0]) for e in swap.state if e)
    rl_steps = max(int(s["step"]) for s in now.values())
    assert (sft_steps, rl_steps) == (1, 1)


def test_metrics_use_the_local_names(both):
    b = both
    for k in ("train/relift_hard_prompts", "train/relift_buffer_size", "train/relift_sft_steps",
              "train/relift_sft_loss", "train/relift_sft_grad_norm", "train/relift_sft_tokens"):
        assert k in b.orl and k in b.local_metrics, k
    assert b.orl["train/relift_hard_prompts"] == b.local_metrics["train/relift_hard_prompts"] == 2.0
    assert b.orl["train/relift_sft_tokens"] == b.local_metrics["train/relift_sft_tokens"]
    assert abs(b.orl["train/relift_sft_loss"] - b.local_metrics["train/relift_sft_loss"]) <= 1e-5
    assert b.orl["train/relift_sft_grad_norm"] == pytest.approx(b.local_metrics["train/relift_sft_grad_norm"],
                                                                rel=1e-4)


def test_relift_state_round_trips_through_a_checkpoint_dir(both, tmp_path):
    r = both.trainer.relift
    r.buffer.add([{"row": 7, "prompt": "p", "solution": "s"}])
    try:
        r.save(tmp_path / "global_step1")
        (tmp_path / "latest").write_text("global_step1")
        again = relift_mod.ActorRelift(r.settings)
        assert again.load(actor_mod.latest_tag_dir(tmp_path))
        assert again.buffer.rows == r.buffer.rows and again.sft_steps == 1
        assert r.swap.state and len(again.swap.state) == len(r.swap.state)
        for a, c in zip(again.swap.state, r.swap.state):
            assert a.keys() == c.keys()
            for k in a:
                x, y = a[k][0], c[k][0]
                assert torch.equal(torch.as_tensor(x), torch.as_tensor(y)), k
        assert not relift_mod.ActorRelift(r.settings).load(tmp_path / "nothing")
    finally:
        r.buffer.rows = []


# ---- without DeepSpeed --------------------------------------------------------------------------------------------
def test_no_relift_hook_after_a_step_deepspeed_skipped(monkeypatch):
    """A step whose update DeepSpeed skipped (non-finite gradients) adds nothing to ReLIFT's buffer and runs no SFT
    step, as on the local engine; the next applied step's notes go in as usual."""
    cfg = compose("engine=openrlhf", "preset=smoke", "method=relift", "method.relift.sft_data_size=8")
    engine = SimpleNamespace(global_steps=0, skipped_steps=0)
    skip = {"next": True}

    def ppo_train(self, kl_ctl):  # OpenRLHF's loop: one optimizer step, skipped or applied
        self.relift.collect(SimpleNamespace(prompts=["p"], labels=[agent_mod.encode_label("1", "s", row=3)]),
                            torch.zeros(1), torch.ones(1))
        engine.global_steps += 1
        engine.skipped_steps += int(skip["next"])
        return {"policy_loss": 0.5}

    monkeypatch.setattr(actor_mod.ActorPPOTrainer, "ppo_train", ppo_train)
    trainer = object.__new__(actor_mod.TrapoActorPPOTrainer)
    trainer.actor = SimpleNamespace(model=engine)
    trainer.args = SimpleNamespace(rollout=SimpleNamespace(batch_size=1))
    trainer.hooks = [relift_mod.ActorRelift.from_config(cfg)]
    trainer.relift = trainer.hooks[0]

    status = trainer.ppo_train(0.0)
    assert trainer.relift.buffer.rows == [] and trainer.relift._seen == {}
    assert not any(k.startswith("hook/") for k in status), status
    assert logger_mod.trapo_metrics(status)["train/skipped_nonfinite"] == 1.0

    skip["next"] = False
    status = trainer.ppo_train(0.0)
    assert [r["row"] for r in trainer.relift.buffer.rows] == [3] and status["hook/relift_hard_prompts"] == 1.0
    assert "train/skipped_nonfinite" not in logger_mod.trapo_metrics(status)


def test_zero3_state_it_cannot_swap_is_refused():
    def engine(**zero):
        opt = SimpleNamespace(**{"swap_optimizer": False, "backup_optimizer": None, "zenflow": False,
                                 "fp32_partitioned_groups_flat": [torch.zeros(2)], **zero})
        opt.optimizer = basic = object()
        return SimpleNamespace(optimizer=opt, basic_optimizer=basic, zero_optimization_stage=lambda: 3)

    assert len(swap_mod.zero3_state_keys(engine())) == 1
    with pytest.raises(ValueError, match="NVMe"):
        swap_mod.zero3_state_keys(engine(swap_optimizer=True))
    with pytest.raises(ValueError, match="partial optimizer offload"):
        swap_mod.zero3_state_keys(engine(backup_optimizer=object()))
