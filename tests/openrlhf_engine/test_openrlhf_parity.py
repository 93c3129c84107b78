"""Same batch, same update: one step of OpenRLHF's DeepSpeed actor vs the local engine (<= 1e-5).

A hand-made TRAPO batch -- two prompts x 8 samples from the micro-group rollout with a scripted generator
and scripted rewards: unguided samples, guided ones (expert prefix + completion, one with a duplicated
prefix), a whole-solution sample with no completion -- is trained once

- by `trapo.engines.local.LocalEngine.train_step` (the reference), and
- by OpenRLHF's own path: responses -> `SamplesGenerator._process_response_into_experience` -> old
  log-probs -> `NaiveReplayBuffer` -> `ActorPPOTrainer.ppo_train` (DataLoader, gradient-accumulation
  windows, DeepSpeed ZeRO-0 engine on gloo/CPU in fp32, clip and AdamW) with TRAPO's `training_step`.
  The OpenRLHF arguments are the launcher's own flags parsed by OpenRLHF's parser.

Compared: the loss and its parts, the gradient of every parameter before clipping, the parameters after
the optimizer step, and the logged metrics under the local engine's names. At rollout temperature 1 and 0.7:
both engines score softmax(logits / T), the policy the rollouts sampled from.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from types import SimpleNamespace

import pytest
import torch

from openrlhf_support import compose, cpu_cuda_shims, openrlhf_modules, require_openrlhf

require_openrlhf()
pytestmark = pytest.mark.openrlhf

(agent_mod, actor_mod, logger_mod, patches, launch_mod, ppo_actor, ds_mod, models_mod, sg_mod, exp_mod,
 vllm) = openrlhf_modules(
    "trapo.engines.openrlhf.agent", "trapo.engines.openrlhf.actor", "trapo.engines.openrlhf.mlflow_logger",
    "trapo.engines.openrlhf.patches", "trapo.engines.openrlhf.launch", "openrlhf.trainer.ray.ppo_actor",
    "openrlhf.utils.deepspeed", "openrlhf.models", "openrlhf.trainer.ppo_utils.samples_generator",
    "openrlhf.trainer.ppo_utils.experience", "vllm")

from trapo.advantages import zero_signal_fraction  # noqa: E402
from trapo.engines.local import LocalEngine  # noqa: E402
from trapo.rl_step import update  # noqa: E402
from trapo.models.tiny import PROMPT_TEMPLATE, build_tiny_model  # noqa: E402
from evaluation.prompts import build_prompt  # noqa: E402
from trapo.rollout import Sample  # noqa: E402
from trapo.data.synthetic import make_split  # noqa: E402

TOL = 1e-5
MAX_NEW = 24
LR = 1e-4  # Adam's first step is ~lr per entry: param differences scale with it


class CPUStrategy(ds_mod.DeepspeedStrategy):
    """OpenRLHF's DeepSpeed strategy on one CPU process: gloo, a CPU device mesh, fp32 (test-only).

    `setup_distributed` of 0.11.2 assumes CUDA (torch.cuda.set_device, init_device_mesh("cuda")).
    Gradients are recorded at the accumulation boundary, before DeepSpeed clips and steps.
    """

    grads: list | None = None

    def setup_distributed(self, timeout=datetime.timedelta(minutes=5)) -> None:
        import deepspeed
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=0, world_size=1)
        deepspeed.init_distributed(dist_backend="gloo")
        self.world_size = dist.get_world_size()
        self.ds_device_mesh = init_device_mesh("cpu", (self.world_size, 1, 1), mesh_dim_names=("dp", "sp", "tp"))
        self.setup_ring_attn(self.ds_device_mesh)
        self.accumulated_gradient = self.train_batch_size // self.micro_train_batch_size // self.world_size

    def get_ds_train_config(self, *args, **kwargs):
        cfg = super().get_ds_train_config(*args, **kwargs)
        cfg["bf16"] = {"enabled": False}  # fp32 on CPU: the comparison is exact up to summation order
        return cfg

    def optimizer_step(self, optimizer, model, scheduler, name="model", **kwargs):
        engine = model.model
        if engine.is_gradient_accumulation_boundary():
            self.grads = [p.grad.detach().clone() for p in engine.module.parameters()]
        super().optimizer_step(optimizer, model, scheduler, name=name, **kwargs)


# ---- the set-up the parity, ReLIFT and GPU checks share (tests/openrlhf_engine/test_openrlhf_relift.py, scripts/gpu_check.py) ----
@contextlib.contextmanager
def recorded_clip_grads():
    """Yields a dict whose "g" is every parameter's gradient just before the local engine clips it."""
    seen = {}
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *a, **k):
        params = list(params)
        seen["g"] = [p.grad.detach().clone() for p in params]
        return clip(params, *a, **k)

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        yield seen
    finally:
        torch.nn.utils.clip_grad_norm_ = clip


def launch_args(cfg, run_dir, model_dir, actor_hooks=()):
    """The launcher's OpenRLHF flags for cfg (model flag -> model_dir), parsed and checked by OpenRLHF."""
    launch = launch_mod.build_launch(cfg, str(run_dir), actor_hooks=actor_hooks)
    argv = [a if a != launch.flags[0].value else str(model_dir) for a in launch.openrlhf_argv]
    return patches.parse_openrlhf_args(argv)


def dist_env(port: int, local_rank: str = "-1") -> None:
    """One process, world size 1, for torch.distributed and DeepSpeed."""
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                     LOCAL_RANK=local_rank).items():
        os.environ[k] = v


def actor_trainer(strategy, args, model, tok, cfg, shims=None, hooks=()):
    """OpenRLHF's Actor and ActorPPOTrainer around `model`, prepared by `strategy` as
    PolicyModelActor.init_model_from_pretrained does, then adopted by TRAPO's actor (with step-hook classes `hooks`)."""
    actor = models_mod.Actor(model)
    actor.packing_samples = args.ds.packing_samples  # set by Actor(path); Actor(module) leaves it unset
    actor_cfg = dict(optim=args.actor.optim, muon=vars(args.actor.muon), adam=vars(args.actor.adam),
                     lr_scheduler=args.actor.lr_scheduler, lr_warmup_ratio=args.actor.lr_warmup_ratio,
                     min_lr_ratio=args.actor.min_lr_ratio, max_norm=args.actor.max_norm, scheduler_steps=1)
    actor, optim, sched = strategy.prepare((actor, actor_cfg))
    with (shims or (lambda: cpu_cuda_shims(0)))():
        trainer = ppo_actor.ActorPPOTrainer(strategy, actor, ema_model=None, actor_optim=optim, actor_scheduler=sched,
                                            micro_train_batch_size=args.train.micro_batch_size, tokenizer=tok,
                                            eps_clip=args.actor.eps_clip, vllm_engines=None)
    actor_mod.adopt(trainer, cfg, hooks)  # what TrapoPolicyModelActor does after OpenRLHF built the trainer
    return actor, trainer


def fill_replay_buffer(trainer, actor, args, responses, tok, device=None) -> None:
    """Experiences exactly as OpenRLHF makes them: rollout responses -> experiences -> old log-probs -> buffer."""
    gen = SimpleNamespace(args=args)
    exps = [sg_mod.SamplesGenerator._process_response_into_experience(gen, r, max_len=args.data.max_len)
            for r in responses]
    mb = args.rollout.micro_batch_size
    for i in range(0, len(exps), mb):
        b = exp_mod.Experience.concat_experiences(exps[i:i + mb], tok.pad_token_id)
        if device is not None:
            b = b.to_device(device)
        with torch.no_grad():
            actor.eval()
            b.action_log_probs = actor(b.sequences, b.action_mask, b.attention_mask)
        b.rewards = b.rewards.float()
        b.advantages = torch.zeros_like(b.action_log_probs)  # OpenRLHF's own; TRAPO's come from info
        trainer.replay_buffer.append(b)


def _script_rollout(cfg, tok, problems):
    """Responses of the agent for each prompt with a scripted generator (random tokens) and reward."""
    g = torch.Generator().manual_seed(0)
    vocab = tok.vocab_size

    def generate(inputs, caps):
        outs = []
        for _, cap in zip(inputs, caps):
            n = int(torch.randint(3, MAX_NEW, (1,), generator=g))
            n = min(n, cap - 1)
            outs.append(torch.randint(3, vocab, (n,), generator=g).tolist() + [tok.eos_token_id])
        return outs

    scripts = [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]]
    schedule = agent_mod.AgentExecutor(cfg=cfg).schedule
    out = []
    for i, p in enumerate(problems):
        text = build_prompt(p.question, tok, PROMPT_TEMPLATE)
        prompt = agent_mod.tokenize_prompt(tok, text, p.base_solution, p.answer)
        rewards = iter(scripts[i])
        out.append(agent_mod.run_group(
            prompt, cfg, schedule, generate, lambda ids: tok.decode(ids, skip_special_tokens=True),
            lambda texts, golds: [next(rewards) for _ in texts], prompt_text=text,
            label=agent_mod.encode_label(p.answer, p.base_solution), group_id=i, max_new_tokens=MAX_NEW))
    return [r for grp in out for r in grp]


def _sample_from_response(r) -> Sample:
    """What the local engine trains on, rebuilt from what OpenRLHF receives."""
    x = r["extra_logs"]
    toks, (start, _) = r["observation_tokens"], r["action_ranges"][0]
    plen = int(x["trapo_prefix_len"])
    return Sample(int(x["trapo_group"]), int(x["trapo_round"]), toks[:start], toks[start:start + plen],
                  toks[start + plen:], reward=r["reward"], expert_weight=x["trapo_prefix_weight"],
                  advantage=x["trapo_advantage"], guided=bool(x["trapo_guided"]))


def _local_metrics(samples, st, n_levels):
    """`trapo.rl_step.rl_metrics` (the trainer's), written out again from the samples and the train_step statistics."""
    unguided = [s for s in samples if not s.guided]
    levels = {}
    for s in samples:
        levels[s.group] = max(levels.get(s.group, 0), s.round if s.guided else 0)
    out = {
        "train/loss": st["loss"], "train/pg_loss": st["pg_loss"], "train/prefix_loss": st["prefix_loss"],
        "train/reward_mean": sum(s.reward for s in unguided) / len(unguided),
        "train/reward_all_mean": sum(s.reward for s in samples) / len(samples),
        "train/zero_signal_frac": zero_signal_fraction(torch.tensor([s.reward for s in samples]),
                                                       torch.tensor([s.group for s in samples])),
        "train/response_length": sum(len(s.completion_ids) for s in unguided) / len(unguided),
        "train/entropy": st["ent_sum"] / max(st["ent_tok"], 1.0),
        "train/expert_token_prob": st["exp_p_sum"] / max(st["exp_tok"], 1.0),
        "train/expert_low_prob_frac": st["exp_low"] / max(st["exp_tok"], 1.0),
    }
    for lvl in range(n_levels):
        out[f"train/guidance_level_{lvl}"] = sum(v == lvl for v in levels.values()) / len(levels)
    return out


@pytest.fixture(scope="module", params=[1.0, 0.7], ids=["T1", "T0.7"])
def both_engines(request):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = compose("engine=openrlhf", "preset=smoke", "method=trapo", f"rollout.max_new_tokens={MAX_NEW}",
                  f"rollout.temperature={request.param}", "train.prompts_per_step=2", f"train.lr={LR}",
                  "engine.zero_stage=0",
                  "engine.micro_train_batch_size=4", "engine.micro_rollout_batch_size=4",
                  "engine.num_nodes=1", "engine.actor_gpus_per_node=1", "engine.vllm_num_engines=1",
                  "engine.vllm_tensor_parallel_size=1", "engine.param_dtype=bf16", "engine.launcher=local",
                  "engine.attn_implementation=eager", "engine.packing_samples=false",  # no flash-attn on CPU
                  "engine.gradient_checkpointing=false", "resume=never")
    model_dir = build_tiny_model(dict(cfg.model.arch), dict(cfg.model.pretrain), progress=False)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    problems = make_split(2, 3, 4, seed=11)
    responses = _script_rollout(cfg, tok, problems)
    samples = [_sample_from_response(r) for r in responses]
    assert any(s.guided and s.completion_ids for s in samples) and any(not s.completion_ids for s in samples)
    assert any(s.expert_weight == 0 for s in samples if s.guided)

    # ---- the local engine ----
    local_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    start_params = [p.detach().clone() for p in local_model.parameters()]
    engine = LocalEngine(local_model, tok, lr=LR, grad_clip=float(cfg.train.grad_clip), micro_batch_size=5)
    with recorded_clip_grads() as local_grads:
        # the trainer's update: Dr.GRPO's constant normaliser, log-probs at the sampling temperature
        st = update(engine, samples, cfg.method, MAX_NEW, temperature=float(cfg.rollout.temperature))
    n_levels = 4
    local = _local_metrics(samples, st, n_levels)

    # ---- OpenRLHF: the launcher's flags, OpenRLHF's parser and checks ----
    args = launch_args(cfg, "/tmp/trapo-parity-run", model_dir)
    assert args.train.batch_size == len(samples) and args.rollout.max_new_tokens == MAX_NEW
    args.local_rank = -1
    dist_env(29533)
    strategy = CPUStrategy(seed=args.train.seed, max_norm=args.actor.max_norm,
                           micro_train_batch_size=args.train.micro_batch_size, train_batch_size=args.train.batch_size,
                           zero_stage=args.ds.zero_stage, args=args)
    strategy.setup_distributed()
    assert strategy.accumulated_gradient == 4
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    actor, trainer = actor_trainer(strategy, args, model, tok, cfg)
    trainer.dataloader_pin_memory = False
    fill_replay_buffer(trainer, actor, args, responses, tok)
    with cpu_cuda_shims("cpu"):
        status = trainer.ppo_train(0.0)
    orl = logger_mod.trapo_metrics(status, n_levels=n_levels)
    return SimpleNamespace(local=local, st=st, local_grads=local_grads["g"], local_model=local_model,
                           orl=orl, status=status, orl_grads=strategy.grads, orl_model=actor.model.module,
                           samples=samples, start_params=start_params)


def test_loss_matches(both_engines):
    b = both_engines
    for k in ("train/loss", "train/pg_loss", "train/prefix_loss"):
        assert abs(b.orl[k] - b.local[k]) <= TOL, (k, b.orl[k], b.local[k])
    assert abs(b.local["train/prefix_loss"]) > 1e-4 and abs(b.local["train/pg_loss"]) > 1e-5  # both parts are live


def test_gradients_match(both_engines):
    b = both_engines
    assert b.orl_grads is not None and len(b.orl_grads) == len(b.local_grads)
    diffs = [float((a - c).abs().max()) for a, c in zip(b.orl_grads, b.local_grads)]
    scale = max(float(g.abs().max()) for g in b.local_grads)
    print(f"max |grad diff| = {max(diffs):.3e} (largest gradient entry {scale:.3e}), "
          f"loss diff = {abs(b.orl['train/loss'] - b.local['train/loss']):.3e}")
    assert max(diffs) <= TOL
    norm_orl = torch.sqrt(sum((g.double() ** 2).sum() for g in b.orl_grads))
    assert abs(float(norm_orl) - b.st["grad_norm"]) <= TOL * max(1.0, b.st["grad_norm"])


def test_parameters_after_the_step_match(both_engines):
    b = both_engines
    worst = max(float((p.detach() - q.detach()).abs().max())
                for p, q in zip(b.orl_model.parameters(), b.local_model.parameters()))
    moved = max(float((p.detach() - q).abs().max())
                for p, q in zip(b.local_model.parameters(), b.start_params))
    print(f"max |param diff| after the step = {worst:.3e} (largest update {moved:.3e})")
    assert moved > 10 * TOL  # the step did move the weights
    assert worst <= TOL


def test_logged_metrics_match_the_local_engine(both_engines):
    b = both_engines
    for k, v in b.local.items():
        assert k in b.orl, k
        assert abs(b.orl[k] - v) <= 1e-4 * max(1.0, abs(v)), (k, b.orl[k], v)
