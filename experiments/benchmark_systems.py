"""The systems experiments/benchmark.py times: our local engine (GRPO and TRAPO steps) and TRL's GRPOTrainer.

Each system runs `run(k)`: k RL steps (rollouts -> rewards -> advantages -> one update), and returns one record
per step: wall time per phase and the samples' lengths (for the FLOP count). Ours is the trainer's own step,
`trapo.rl_step.rl_step`, with timers around its generation and reward calls.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from trapo.engines.local import LocalEngine
from trapo.guidance import GuidanceSchedule
from trapo.rl_step import rl_step
from trapo.rollout import Prompt, Sample

PHASES = ("generation", "reward", "rollout_other", "logprobs", "backward", "optimizer", "other")


@dataclass
class StepRecord:
    seconds: dict[str, float]  # "step" and each of PHASES
    lengths: list[tuple[int, int, int]]  # (prompt, prefix, completion) tokens per sample
    samples: list[Sample] = field(default_factory=list, repr=False)  # ours only (for the shared-work FLOPs)
    rounds: list[dict] = field(default_factory=list)  # ours only: each generate call (one per micro-group round)


@dataclass
class Work:
    """One step's work, the same for every system."""

    prompts: list[Prompt]  # the pool; each step takes the next `n_prompts`
    golds: list[str]
    texts: list[str]  # the prompts as text (TRL tokenizes them itself)
    n_prompts: int
    group_size: int
    max_new_tokens: int
    stop_at_eos: bool
    temperature: float = 1.0
    micro_batch: int = 32
    lr: float = 1e-6  # tiny: the policy must not drift between blocks (the work, not the learning, is measured)


# ------------------------------------------------------------------------------------------------ ours
class OursSystem:
    """One RL step of trapo's local engine: `trapo.rl_step.rl_step`, the step trapo.trainer.Trainer runs."""

    def __init__(self, name: str, model, tokenizer, work: Work, method, schedule: GuidanceSchedule,
                 reward_fn: Callable, seed: int = 0):
        self.name, self.work, self.method, self.schedule = name, work, method, schedule
        self.engine = LocalEngine(copy.deepcopy(model), tokenizer, lr=work.lr, micro_batch_size=work.micro_batch,
                                  grad_clip=1.0)
        self.reward_fn = reward_fn
        self.seed = seed
        self.steps_done = 0

    def _batch(self) -> list[Prompt]:
        n, pool = self.work.n_prompts, self.work.prompts
        start = (self.steps_done * n) % len(pool)
        return [pool[(start + i) % len(pool)] for i in range(n)]

    def step(self) -> StepRecord:
        w, eng = self.work, self.engine
        eng.times.clear()
        reward_s = 0.0

        def timed_reward(texts, golds):
            nonlocal reward_s
            t = time.perf_counter()
            r = self.reward_fn(texts, golds)
            reward_s += time.perf_counter() - t
            return r

        gen = torch.Generator().manual_seed(self.seed * 1000 + self.steps_done)
        rounds: list[dict] = []

        def generate(xs, max_new):  # one call per micro-group round (rounds with nothing to generate make none)
            t = time.perf_counter()
            outs = eng.generate(xs, max_new_tokens=max_new, temperature=w.temperature, generator=gen,
                                stop_at_eos=w.stop_at_eos)
            rounds.append({"seconds": time.perf_counter() - t, "rows": len(xs),
                           "inputs": len({tuple(x) for x in xs}), "decode_steps": max(map(len, outs), default=0)})
            return outs

        t0 = time.perf_counter()
        res = rl_step(eng, self._batch(), self.schedule, self.method, generate=generate, decode=eng.decode,
                      reward_fn=timed_reward, max_new_tokens=w.max_new_tokens, temperature=w.temperature)
        total = time.perf_counter() - t0
        self.steps_done += 1
        samples = res.rollouts.samples
        sec = {"step": total, "generation": eng.times["generate"], "reward": reward_s,
               "rollout_other": res.rollout_s - eng.times["generate"] - reward_s,
               "logprobs": eng.times["logprobs"], "backward": eng.times["backward"],
               "optimizer": eng.times["optimizer"]}
        sec["other"] = total - sum(sec[p] for p in PHASES if p in sec)
        lengths = [(len(s.prompt_ids), len(s.expert_ids), len(s.completion_ids)) for s in samples]
        return StepRecord(sec, lengths, samples, rounds)

    def run(self, k: int) -> list[StepRecord]:
        return [self.step() for _ in range(k)]


# ------------------------------------------------------------------------------------------------ TRL
def make_trl_system(name: str, model, tokenizer, work: Work, reward_fn: Callable, scale_by_std: bool,
                    seed: int = 0, min_new_tokens: int | None = None):
    """TRL's GRPOTrainer set up for the same work as ours (see the comments for each choice)."""
    import transformers
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    rec: dict = {"phases": {}, "lengths": [], "steps": []}

    def add(phase: str, dt: float) -> None:
        rec["phases"][phase] = rec["phases"].get(phase, 0.0) + dt

    class TimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with wall-clock timers around its phases (every call goes to TRL's own code)."""

        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            t = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            add("generation", time.perf_counter() - t)
            rec["lengths"] += [(len(p), 0, len(c)) for p, c in zip(prompt_ids, completion_ids)]
            return completion_ids, logprobs

        def _calculate_rewards(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            add("reward", time.perf_counter() - t)
            return out

        def _prepare_inputs(self, *args, **kwargs):
            t = time.perf_counter()
            out = super()._prepare_inputs(*args, **kwargs)
            add("prepare", time.perf_counter() - t)
            return out

        def compute_loss(self, *args, **kwargs):
            t = time.perf_counter()
            out = super().compute_loss(*args, **kwargs)
            add("logprobs", time.perf_counter() - t)
            return out

        def training_step(self, *args, **kwargs):
            t = time.perf_counter()
            out = super().training_step(*args, **kwargs)
            rec["last_micro_step_end"] = time.perf_counter()
            add("training_step", rec["last_micro_step_end"] - t)
            return out

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            rec["phases"], rec["lengths"], rec["t0"] = {}, [], time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kw):
            add("optimizer", time.perf_counter() - rec["last_micro_step_end"])  # grad clip + AdamW, as ours

        def on_step_end(self, args, state, control, **kw):
            rec["steps"].append((time.perf_counter() - rec["t0"], dict(rec["phases"]), list(rec["lengths"])))

    def reward(completions, gold, **kwargs):
        return reward_fn(completions, gold)

    gen_kwargs = {"min_new_tokens": min_new_tokens} if min_new_tokens else None
    out_dir = tempfile.mkdtemp(prefix="trapo-bench-trl-")  # TRL requires one; nothing is saved there
    args = GRPOConfig(
        output_dir=out_dir, seed=seed, use_cpu=not torch.cuda.is_available(),
        # fp32 and no activation recomputation, as our engine (TRL's defaults are bf16 and checkpointing on)
        bf16=False, gradient_checkpointing=False,
        # the same batch: n_prompts x group_size samples per step, micro-batches of work.micro_batch sequences,
        # one generation per optimizer step and one update per generation (no old-log-prob pass needed)
        num_generations=work.group_size,
        per_device_train_batch_size=work.micro_batch,
        gradient_accumulation_steps=work.n_prompts * work.group_size // work.micro_batch,
        num_iterations=1,
        # Dr.GRPO, no reference model, no entropy bonus, constant LR, the same clip and optimizer
        loss_type="dr_grpo", scale_rewards="group" if scale_by_std else "none", beta=0.0,
        learning_rate=work.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch",
        max_completion_length=work.max_new_tokens, temperature=work.temperature, top_p=1.0, top_k=0,
        generation_kwargs=gen_kwargs,
        logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True, log_completions=False,
        dataloader_num_workers=0, remove_unused_columns=False, max_steps=1,
    )
    data = Dataset.from_dict({"prompt": work.texts, "gold": work.golds})
    trainer = TimedGRPOTrainer(model=copy.deepcopy(model), reward_funcs=reward, args=args, train_dataset=data,
                               processing_class=tokenizer, callbacks=[StepTimer()])
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    weakref.finalize(trainer, shutil.rmtree, out_dir, True)
    return TrlSystem(name, trainer, rec)


class TrlSystem:
    def __init__(self, name: str, trainer, rec: dict):
        self.name, self.trainer, self.rec = name, trainer, rec

    def run(self, k: int) -> list[StepRecord]:
        """k optimizer steps of one `trainer.train()` call, timed from TRL's step callbacks."""
        self.rec["steps"] = []
        self.trainer.args.max_steps = k
        self.trainer.train()
        out = []
        for total, ph, lengths in self.rec["steps"]:
            sec = {"step": total, "generation": ph.get("generation", 0.0), "reward": ph.get("reward", 0.0),
                   "rollout_other": ph.get("prepare", 0.0) - ph.get("generation", 0.0) - ph.get("reward", 0.0),
                   "logprobs": ph.get("logprobs", 0.0),
                   "backward": ph.get("training_step", 0.0) - ph.get("prepare", 0.0) - ph.get("logprobs", 0.0),
                   "optimizer": ph.get("optimizer", 0.0)}
            sec["other"] = total - sum(sec[p] for p in PHASES if p in sec)
            out.append(StepRecord(sec, lengths))
        return out


def interleaved(systems: Sequence, steps: int, warmup: int, log: Callable[[str], None]) -> dict[str, list]:
    """Warm-up steps (dropped), then blocks in the order A B C .. C B A, `steps` measured steps per system."""
    for s in systems:
        log(f"  warm-up {s.name}: {warmup} step(s)")
        s.run(warmup)
    first = (steps + 1) // 2
    records: dict[str, list] = {s.name: [] for s in systems}
    for block, order in ((first, list(systems)), (steps - first, list(reversed(systems)))):
        if block <= 0:
            continue
        for s in order:
            recs = s.run(block)
            records[s.name] += recs
            log(f"  {s.name}: " + ", ".join(f"{r.seconds['step']:.2f}" for r in recs) + " s")
    return records
