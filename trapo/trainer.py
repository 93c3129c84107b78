"""The training recipe: rollouts -> rewards -> advantages -> one update, for TRAPO and the methods beside it.

One readable loop over steps. A method is a config (conf/method/*.yaml); its phases are SFT on
reference solutions and/or RL with micro-group rollouts, each step one call of `trapo.rl_step` (which
OpenRLHF's engine and the benchmark call too). A method that adds work around the RL step (an SFT step of
its own, a schedule) does it through step hooks (trapo/hooks.py) that its runner hands to the trainer.
Everything random derives from (seed, step), so a run resumed from a checkpoint takes exactly the steps an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from evaluation.prompts import build_prompt
from evaluation.runner import eval_metrics
from trapo.checkpoint import FORMAT as CHECKPOINT_FORMAT
from trapo.checkpoint import Checkpointer, CheckpointState
from trapo.config import validate_config
from trapo.data.loading import Dataset, Item, load_dataset
from trapo.data.order import step_prompt_indices, step_seed
from trapo.engines.local import LocalEngine, torch_threads
from trapo.guidance import guidance_schedule, rl_schedule
from trapo.hooks import StepHook, check_claimed
from trapo.models.loading import check_model_source, load_model_and_tokenizer
from trapo.rewards import build_reward
from trapo.run_dir import (resolved_config_file, run_log, set_aside_previous, truncate_metrics,
                            write_mlflow_pointer)
from trapo.rollout import Prompt, tokenize_prompt
from trapo.rl_step import rl_metrics, rl_step, sft_metrics, sft_step
from trapo.tracking import Tracker, check_reachable, run_name, run_tags, ui_hint

log = logging.getLogger(__name__)
step_log = logging.getLogger("trapo.steps")  # one line per step: run.log only (the console has the bar)

Callback = Callable[[int, Mapping[str, float]], None]

# On SIGTERM a run whose steps take at most this long finishes its step and writes a checkpoint before it stops
# (SLURM, `timeout`, `docker stop` wait 10-30 s before SIGKILL); a slower one stops at once, as Ctrl-C does.
STOP_GRACE_S = 10.0


class Preempted(KeyboardInterrupt):
    """SIGTERM: the run stops as it does on Ctrl-C (stop line, resume command, MLflow run KILLED)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Phase:
    kind: str  # "sft" | "rl"
    start: int  # first global step of the phase
    steps: int


def method_phases(method, total_steps: int) -> list[Phase]:
    """SFT for the first `sft_fraction` of the steps, RL for the rest (1.0: SFT only; e.g. 0.5: SFT, then RL from
    its weights)."""
    n_sft = int(round(float(method.sft_fraction) * total_steps))
    phases = []
    if n_sft:
        phases.append(Phase("sft", 0, n_sft))
    if total_steps - n_sft:
        phases.append(Phase("rl", n_sft, total_steps - n_sft))
    return phases


class Trainer:
    def __init__(self, cfg, output_dir: str | Path, callbacks: list[Callback] | None = None,
                 tags: Mapping[str, str] | None = None, overrides: list[str] | None = None,
                 source: str = "experiments/run.py", command: str | None = None, resume_hint: str | None = None,
                 hooks: Sequence[type[StepHook]] = ()):
        """`overrides` (the command line's) name the run in MLflow; `tags` are added to (and win over) the
        standard ones (reproduce: config_hash); `resume_hint` is printed when the run is interrupted; `hooks`:
        step-hook classes (trapo/hooks.py), each built once the engine exists (a method's runner names its)."""
        validate_config(cfg)
        check_claimed(cfg.method, hooks)  # a method block no hook reads: refused, not silently ignored
        self.hook_classes = tuple(hooks)
        self.hooks: list[StepHook] = []
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.callbacks = list(callbacks or [])
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.overrides, self.source, self.command = list(overrides or []), source, command
        self.resume_hint = resume_hint or "rerun the same command to resume"
        self.step = 0  # optimizer steps done
        self._stop_requested: str | None = None  # set by SIGTERM: checkpoint and stop after this step
        self.method = cfg.method
        self.schedule = guidance_schedule(cfg)  # its rounds name the guidance-level metrics
        self.rl_schedule = rl_schedule(cfg)
        self.checkpointer = Checkpointer(self.output_dir / "checkpoints", keep=int(cfg.checkpoint.keep))

    # ---- set-up -----------------------------------------------------------------------------
    def _prepare(self) -> CheckpointState | None:
        """Everything that can reject the run, before any work is done or an MLflow run is created:
        the data (file:line:field errors), the model source, the checkpoint to resume from, MLflow."""
        cfg = self.cfg
        self.data: Dataset = load_dataset(cfg.data)
        if not self.data.train:
            raise ValueError(f"data ({cfg.data.name}): the training set is empty")
        check_model_source(cfg.model)
        if cfg.model.kind == "tiny" and cfg.data.kind == "jsonl":  # a character model: refuse what it cannot spell
            from trapo.data.loading import check_alphabet
            from trapo.models.tiny import CHARS

            check_alphabet(cfg.data.path, cfg.data.fields, CHARS, model=str(cfg.model.get("name", "tiny")))
        state = self.checkpointer.latest() if cfg.resume == "auto" else None
        if state is not None:
            self._check_resumable(state)
        check_reachable()
        return state

    def _setup(self) -> None:
        cfg = self.cfg
        torch.set_num_threads(torch_threads(cfg))
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights"/"Writing model shards" bars under the training bar
        device = cfg.engine.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # transformers imports DeepSpeed where it is installed: no GPU probe and its warning
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        self.model, self.tokenizer, self.template = load_model_and_tokenizer(cfg.model, device=device)
        seed_everything(int(cfg.seed))  # after the model: building the tiny model reseeds torch
        self.reward_fn = build_reward(cfg.data.reward)
        from evaluation.grader import Grader

        self.grader = Grader(progress=False)
        first_sft = bool(method_phases(self.method, int(cfg.train.steps))[0].kind == "sft")
        self.engine = LocalEngine(self.model, self.tokenizer,
                                  lr=float(cfg.train.sft_lr if first_sft else cfg.train.lr),
                                  weight_decay=float(cfg.train.weight_decay), grad_clip=float(cfg.train.grad_clip),
                                  micro_batch_size=int(cfg.train.micro_batch_size), device=device,
                                  warmup_steps=int(cfg.train.get("warmup_steps", 0) or 0),
                                  micro_batch_tokens=cfg.train.micro_batch_tokens,
                                  logits_chunk_tokens=(1 << 30 if cfg.train.logits_chunk_tokens is None
                                                       else int(cfg.train.logits_chunk_tokens)),
                                  gradient_checkpointing=bool(cfg.train.gradient_checkpointing))
        self._prompt_cache: dict[int, Prompt] = {}
        self._warned_long_solution = False
        self.hooks = [h for h in (cls.from_config(cfg, self.engine) for cls in self.hook_classes) if h is not None]

    # ---- data position and resume checks -------------------------------------------------------
    def _data_position(self, step: int) -> dict:
        """Where the data stream stands after `step` steps (batches derive from (seed, step) and the data)."""
        n, b = len(self.data.train), int(self.cfg.train.prompts_per_step)
        if not hasattr(self, "_fingerprint"):
            h = hashlib.sha256()
            for it in self.data.train:
                h.update(json.dumps([it.question, it.solution, it.answer]).encode())
            self._fingerprint = h.hexdigest()[:16]
        return {"position": step * b, "epoch": step * b // n, "n_train": n, "prompts_per_step": b,
                "seed": int(self.cfg.seed), "fingerprint": self._fingerprint}

    def _check_resumable(self, state: CheckpointState) -> None:
        """A checkpoint continues this run only if it was written for the same data, seed and method."""
        redo = "rerun with resume=never (earlier outputs are moved aside) or use a new hydra.run.dir"
        if state.meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{state.path}: checkpoint format {state.meta.get('format', 1)} is not "
                             f"{CHECKPOINT_FORMAT} (written by an older trapo); {redo}")
        saved, now = state.meta.get("data") or {}, self._data_position(state.step)
        diffs = [f"{k} {saved.get(k)!r} != {now[k]!r}" for k in ("n_train", "fingerprint", "seed", "prompts_per_step")
                 if saved.get(k) != now[k]]
        if state.meta.get("method") not in (None, str(self.method.name)):
            diffs.append(f"method {state.meta['method']!r} != {str(self.method.name)!r}")
        if state.step > int(self.cfg.train.steps):
            diffs.append(f"its step {state.step} is beyond train.steps={self.cfg.train.steps}")
        if diffs:
            raise ValueError(f"{state.path}: cannot resume, the checkpoint belongs to another run "
                             f"({'; '.join(diffs)}); {redo}")

    def _checkpoint_meta(self, step: int, phase: str, tracker: Tracker) -> dict:
        meta = {"mlflow_run_id": tracker.run_id, "phase": phase, "method": str(self.method.name),
                "data": self._data_position(step)}
        for hook in self.hooks:
            meta[hook.config_key] = hook.state()
        return meta

    def _extra_optimizers(self) -> dict:
        """Optimizers besides the engine's that checkpoints hold (the step hooks' own)."""
        return {name: opt for hook in self.hooks for name, opt in hook.optimizers().items()}

    def _save_checkpoint(self, step: int, phase: str, tracker: Tracker) -> None:
        self.checkpointer.save(step, self.engine, self._checkpoint_meta(step, phase, tracker),
                               optimizers=self._extra_optimizers())

    def _prompt(self, idx: int) -> Prompt:
        """Tokenized training prompt `idx` with its reference solution (+ EOS) and paragraph breaks."""
        if idx not in self._prompt_cache:
            item = self.data.train[idx]
            p = tokenize_prompt(self.tokenizer, build_prompt(item.question, self.tokenizer, self.template),
                                item.solution, item.answer, eos_id=self.engine.eos_id)
            cap = int(self.cfg.rollout.max_new_tokens)
            if len(p.solution_ids) > cap and not self._warned_long_solution:
                self._warned_long_solution = True
                log.warning("train item %d: its reference solution has %d tokens, more than rollout.max_new_tokens=%d;"
                            " expert prefixes, reference samples and SFT targets are cut to %d tokens (a response is prefix + "
                            "completion, as in the authors' code). Raise rollout.max_new_tokens to guide with whole "
                            "solutions (warned once per run)", idx, len(p.solution_ids), cap, cap)
            self._prompt_cache[idx] = p
        return self._prompt_cache[idx]

    def _batch_indices(self, step: int) -> list[int]:
        """Prompts of a step (trapo.data.order: the same order as the OpenRLHF job's prompt file)."""
        return step_prompt_indices(len(self.data.train), 1, int(self.cfg.train.prompts_per_step),
                                   int(self.cfg.seed), first_step=step)

    # ---- one step of each phase (trapo.rl_step) ----------------------------------------------------
    def _sft_step(self, step: int) -> dict[str, float]:
        st = sft_step(self.engine, [self._prompt(i) for i in self._batch_indices(step)], self.method,
                      max_new_tokens=int(self.cfg.rollout.max_new_tokens))
        return {**sft_metrics(st), "_finite": st["finite"]}

    def _rl_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        indices = self._batch_indices(step)
        gen = torch.Generator().manual_seed(step_seed(int(cfg.seed), step, salt=2))
        res = rl_step(
            self.engine, [self._prompt(i) for i in indices], self.rl_schedule, self.method,
            generate=lambda inputs, max_new: self.engine.generate(inputs, max_new_tokens=max_new,
                                                                  temperature=float(cfg.rollout.temperature),
                                                                  generator=gen),
            decode=self.engine.decode, reward_fn=self.reward_fn, max_new_tokens=int(cfg.rollout.max_new_tokens),
            temperature=float(cfg.rollout.temperature),
        )
        metrics = {**rl_metrics(res, self.method, n_levels=self.schedule.n_rounds), "_finite": res.stats["finite"]}
        # the step hooks, not after a step that applied nothing (non-finite and skipped): its rollouts came from
        # the same policy as the batch's retry would
        if res.stats["finite"]:
            for hook in self.hooks:
                metrics.update(hook.after_rl_step(indices, res.rollouts.samples, self._prompt))
        return metrics

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, items: list[Item], name: str = "valid") -> tuple[dict, list[dict]]:
        """(summary, rows) from the same code that scores the benchmarks (evaluation.runner)."""
        from evaluation.runner import evaluate_items

        ev = self.cfg.eval
        return evaluate_items(items, self.backend(), self.grader, n_samples=int(ev.n_samples),
                              temperature=float(ev.temperature), max_new_tokens=int(ev.max_new_tokens),
                              seed=int(self.cfg.seed), name=name)

    def backend(self):
        from trapo.engines.backend import EngineBackend

        return EngineBackend(self.engine, self.template, int(self.cfg.eval.batch_size))

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        state = self._prepare()  # everything that can reject the run, before its directory or log exists
        with run_log(self.output_dir, step_log), self._sigterm_stops():
            return self._run(state)

    @contextmanager
    def _sigterm_stops(self):
        """SIGTERM ends the run like Ctrl-C. Between steps of a run whose steps are short (`STOP_GRACE_S`) it
        first finishes the step and checkpoints it, so a preempted job loses nothing; a second SIGTERM, or a slow
        step, stops at once (the last periodic checkpoint is where a rerun resumes)."""
        import signal
        import threading

        self._stop_requested = None
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return

        def on_sigterm(signum, frame):
            step_s = getattr(self, "_last_step_s", None)
            if self._stop_requested is None and getattr(self, "_in_steps", False) and step_s is not None \
                    and step_s <= STOP_GRACE_S:
                self._stop_requested = "SIGTERM"
                log.warning("SIGTERM: finishing step %d, writing a checkpoint, then stopping", self.step + 1)
                return
            raise Preempted("SIGTERM")

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self, state: CheckpointState | None) -> dict[str, float]:
        cfg = self.cfg
        if cfg.resume == "never":
            set_aside_previous(self.output_dir)
        self._setup()
        total = int(cfg.train.steps)
        phases = method_phases(self.method, total)
        start = 0
        run_id = None
        if state is not None:
            start, run_id = (self.checkpointer.restore(state, self.engine, optimizers=self._extra_optimizers()),
                             state.meta.get("mlflow_run_id"))
            for hook in self.hooks:
                hook.load(state.meta.get(hook.config_key))
        self.step = start
        truncate_metrics(self.output_dir, start)
        tags = {**run_tags(cfg, self.output_dir, self.overrides, source=self.source, command=self.command),
                **self.tags}
        name = run_name(str(self.method.name), cfg.seed, cfg.get("preset_name"), tags["overrides"].split())
        tracker = Tracker(cfg.tracking.experiment, run_name=name, run_id=run_id, tags=tags,
                          parent_run_id=cfg.tracking.get("parent_run_id"),
                          fallback_path=self.output_dir / "mlflow_fallback.jsonl")
        if run_id is None:
            from omegaconf import OmegaConf

            from trapo.tracking import flatten

            tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
            tracker.log_artifact(str(resolved_config_file(self.output_dir, OmegaConf.to_yaml(cfg, resolve=True))),
                                 "config")
        mlflow_run = f"MLflow run '{tracker.run_name}' ({tracker.run_id[:8]}, experiment {cfg.tracking.experiment})"
        write_mlflow_pointer(self.output_dir, tracker, str(cfg.tracking.experiment))
        if state is not None:
            log.info("resuming from step %d/%d (checkpoint %s)", start, total, state.path.name)
        log.info("outputs: %s | %s", self.output_dir, mlflow_run)
        status = "FAILED"
        try:
            final = self._loop(phases, start, total, tracker)
            status = "FINISHED"
            log.info("done: outputs in %s | %s; view: %s", self.output_dir, mlflow_run,
                     ui_hint(tracker.uri, tracker.experiment_id, tracker.run_id))
            return final
        except KeyboardInterrupt as stop:
            status = "KILLED"
            last = self.checkpointer.latest()
            saved = (f"last checkpoint step {last.step}; {self.resume_hint}" if last is not None else
                     f"no checkpoint yet (checkpoint.every={cfg.checkpoint.every}): a rerun starts from step 0")
            log.warning("stopped%s at step %d/%d, %s", " by SIGTERM" if isinstance(stop, Preempted) else "",
                        self.step, total, saved)
            raise
        finally:
            tracker.finish(status)
            self.grader.close()
            if hasattr(self.reward_fn, "close"):
                self.reward_fn.close()

    def _loop(self, phases: list[Phase], start: int, total: int, tracker: Tracker) -> dict[str, float]:
        cfg = self.cfg
        with logging_redirect_tqdm():  # log lines print above the bars instead of through them
            with tqdm(total=total, initial=start, desc=f"{self.method.name}", disable=not cfg.progress,
                      dynamic_ncols=True) as bar:
                self._steps(phases, start, total, tracker, bar)
            final = self.final_eval()
        # `score`: one short column to sort the MLflow runs list by (eval/avg_accuracy, else valid/accuracy)
        score = final.get("eval/avg_accuracy", final.get("valid/accuracy"))
        tracker.log_metrics({**final, **({"score": score} if score is not None else {})}, step=total)
        if cfg.checkpoint.save_final:
            self._save_checkpoint(total, "done", tracker)
        (self.output_dir / "final_metrics.json").write_text(json.dumps(final, indent=2))
        step_log.info("final: %s", " ".join(f"{k}={v:.3f}" for k, v in final.items()))
        return final

    def _steps(self, phases: list[Phase], start: int, total: int, tracker: Tracker, bar) -> None:
        self._in_steps = True
        try:
            self._run_steps(phases, start, total, tracker, bar)
        finally:
            self._in_steps = False

    def _run_steps(self, phases: list[Phase], start: int, total: int, tracker: Tracker, bar) -> None:
        cfg = self.cfg
        for phase in phases:
            for step in range(max(start, phase.start), phase.start + phase.steps):
                if phase.kind == "rl" and step == phase.start and phase.start > 0 and start <= phase.start:
                    self.engine.reset_optimizer(float(cfg.train.lr))  # SFT->RL: RL starts from fresh Adam moments
                t0 = time.perf_counter()
                metrics = self._sft_step(step) if phase.kind == "sft" else self._rl_step(step)
                finite = metrics.pop("_finite")
                if not finite or not math.isfinite(metrics["train/loss"]):  # the engine applied no update
                    if cfg.train.on_nonfinite == "skip":
                        metrics["train/skipped_nonfinite"] = 1.0
                        log.warning("step %d: non-finite loss or gradient (loss=%s); batch skipped", step + 1,
                                    metrics["train/loss"])
                    else:
                        last = self.checkpointer.latest()
                        raise FloatingPointError(
                            f"non-finite loss or gradient at step {step + 1} (loss={metrics['train/loss']}, "
                            f"grad_norm={metrics['train/grad_norm']}); nothing was applied. Last good checkpoint: "
                            f"{last.path if last else 'none'}; train.on_nonfinite=skip skips such batches"
                        )
                metrics["time/step_s"] = time.perf_counter() - t0
                metrics["train/phase_rl"] = float(phase.kind == "rl")
                done = step + 1
                if cfg.eval.every and done % int(cfg.eval.every) == 0 and done < total:
                    metrics["valid/accuracy"] = self.evaluate(self.data.valid)[0]["accuracy"]
                clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
                tracker.log_metrics(clean, step=done)
                with open(self.output_dir / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps({"step": done, **clean}) + "\n")
                if "valid/accuracy" in metrics:
                    for cb in self.callbacks:
                        cb(done, {"valid/accuracy": metrics["valid/accuracy"]})
                saved = bool(cfg.checkpoint.every) and done % int(cfg.checkpoint.every) == 0 and done < total
                if saved or (self._stop_requested and done < total):
                    self._save_checkpoint(done, phase.kind, tracker)
                bar.update(1)
                postfix = {"loss": f"{metrics['train/loss']:.3f}"}
                if "train/reward_mean" in metrics:
                    # unguided samples only (the paper's curve); a guided method's hard prompts are in reward_all
                    postfix["reward"] = f"{metrics['train/reward_mean']:.2f}"
                    postfix["reward_all"] = f"{metrics['train/reward_all_mean']:.2f}"
                bar.set_postfix(postfix)
                self.step = done
                self._last_step_s = metrics["time/step_s"]
                step_log.info("step %d/%d %s %s", done, total, phase.kind, " ".join(
                    f"{k.split('/', 1)[-1]}={v:.4g}" for k, v in clean.items() if not k.startswith("time/")))
                if self._stop_requested:
                    raise Preempted(self._stop_requested)

    def final_eval(self) -> dict[str, float]:
        """Validation and every evaluation split; per-sample rows go to <run dir>/eval/."""
        from evaluation.runner import write_results

        splits = ({"valid": self.data.valid} if self.data.valid else {}) | dict(self.data.eval_splits)
        results = {}
        with tqdm(total=sum(len(v) for v in splits.values()), desc="eval", unit="problem", leave=False,
                  disable=not self.cfg.progress, dynamic_ncols=True) as bar:
            for name, items in splits.items():
                bar.set_postfix(split=name)
                results[name] = self.evaluate(items, name)
                bar.update(len(items))
        write_results(results, self.output_dir / "eval")
        return eval_metrics(results)
