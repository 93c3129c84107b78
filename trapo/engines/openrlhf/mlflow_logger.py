"""MLflow for OpenRLHF runs, with the local engine's metric names.

OpenRLHF 0.11.2 logs only to wandb or tensorboard (`BasePPOTrainer.__init__` creates
`self.tensorboard_logger`, `save_logs_and_checkpoints` calls its `log_train`/`log_eval`). `MlflowLogger`
has the same three methods and takes that slot (`patches.ppo_trainer_class`). `trapo_metrics` turns the
step status of OpenRLHF (with the `trapo/*` values of `actor.TrapoActorPPOTrainer`) into the metrics
that the local trainer logs (`trapo.rl_step.rl_metrics`), so runs of both engines compare in one experiment.

Failures and resume, as the local trainer (`trapo.trainer.Trainer._run`): once the run exists, what MLflow does
not take goes to `mlflow_fallback.jsonl` in the job's output directory and training goes on; the run's id is
kept there (`mlflow_run.json`), and a job that OpenRLHF resumes from a checkpoint continues that run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from trapo.rl_step import TOKEN_SUMS, level_metric, logs_guidance, token_metrics

TIMING = {"timing/generation": "time/rollout_s", "timing/ppo_train": "time/update_s",
          "timing/step_total": "time/step_s", "timing/make_experience": "time/make_experience_s",
          "timing/broadcast": "time/weight_sync_s"}


def _ratio(num: float, den: float, empty: float) -> float:
    return num / den if den > 0 else empty


def trapo_metrics(status: Mapping[str, Any], *, n_levels: int = 4, log_levels: bool = True) -> dict[str, float]:
    """The local engine's `train/*` metrics from one OpenRLHF step status (other values under `openrlhf/`)."""
    s = {k: v for k, v in status.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out: dict[str, float] = {}
    if "trapo/loss" in s:
        unguided = s.get("trapo/unguided", 0.0)
        out.update({
            "train/loss": s["trapo/loss"],
            "train/pg_loss": s["trapo/pg_loss"],
            "train/prefix_loss": s["trapo/prefix_loss"],
            "train/reward_mean": _ratio(s.get("trapo/reward_unguided", 0.0), unguided, float("nan")),
            "train/reward_all_mean": s.get("trapo/reward", float("nan")),
            "train/response_length": _ratio(s.get("trapo/len_unguided", 0.0), unguided, 0.0),
            "train/zero_signal_frac": s.get("trapo/zero_signal", 0.0),
            "train/phase_rl": 1.0,
        })
        if log_levels:
            for lvl in range(n_levels):
                out[level_metric(lvl)] = s.get(f"trapo/level_{lvl}", 0.0)
        out.update(token_metrics({k: s.get(f"trapo/{k}", 0.0) for k in TOKEN_SUMS}, with_expert=log_levels))
    if "actor_grad_norm" in s:
        out["train/grad_norm"] = s["actor_grad_norm"]
    if "trapo/skipped_nonfinite" in s:  # DeepSpeed skipped the update (`actor.TrapoActorPPOTrainer.ppo_train`)
        out["train/skipped_nonfinite"] = s["trapo/skipped_nonfinite"]
    for k, v in s.items():
        if k in TIMING:
            out[TIMING[k]] = v
        elif k.startswith("hook/"):  # the actor's step hooks (trapo/hooks.py), e.g. ReLIFT's buffer and SFT step
            out["train/" + k[len("hook/"):]] = v
        elif not k.startswith("trapo/") and k != "actor_grad_norm":
            out[f"openrlhf/{k}"] = v
    return {k: float(v) for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


RUN_FILE = "mlflow_run.json"  # the job's MLflow run, continued when the job resumes
FALLBACK_FILE = "mlflow_fallback.jsonl"  # what MLflow did not take (trapo.tracking), as the local trainer's


def job_output_dir(args) -> Path:
    """The job's output directory: the launcher's engine.output_dir (default <run dir>/openrlhf), which holds
    OpenRLHF's checkpoints (`--ckpt.path`, `flags.deepspeed_flags`) and final model."""
    return Path(args.ckpt.path).parent


def resumes_from_checkpoint(args) -> bool:
    """Whether OpenRLHF resumes the job from a checkpoint (`PPOTrainer.init_checkpoint_states`'s test)."""
    return bool(args.ckpt.load_enable) and os.path.exists(os.path.join(args.ckpt.path, "_actor"))


def stored_run_id(output_dir: str | Path) -> str | None:
    path = Path(output_dir) / RUN_FILE
    return json.loads(path.read_text())["run_id"] if path.is_file() else None


def store_run_id(output_dir: str | Path, run_id: str) -> None:
    path = Path(output_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_id": run_id}))
    os.replace(tmp, path)


class MlflowLogger:
    """OpenRLHF's logger interface (`log_train`, `log_eval`, `close`) on `trapo.tracking.Tracker`.

    With `output_dir` (the controller's: `for_job`), MLflow failures after the start go to its fallback file and the
    run id is stored there; `resume` continues the stored run. Without it, a failure raises."""

    def __init__(self, cfg, tracker=None, *, output_dir: str | Path | None = None, resume: bool = False):
        from trapo.guidance import guidance_schedule
        from trapo.engines.openrlhf.settings import to_container
        from trapo.tracking import Tracker, flatten

        m = cfg.method
        self.n_levels = guidance_schedule(cfg).n_rounds  # as the local trainer: the configured schedule's rounds
        self.log_levels = logs_guidance(m)
        tracking = cfg.tracking
        out = Path(output_dir) if output_dir is not None else None
        run_id = stored_run_id(out) if resume and out is not None else None
        self.tracker = tracker or Tracker(
            str(tracking.experiment), run_name=str(tracking.get("run_name") or m.name), run_id=run_id,
            tags={"method": str(m.name), "engine": "openrlhf"}, parent_run_id=tracking.get("parent_run_id"),
            fallback_path=out / FALLBACK_FILE if out is not None else None)
        if run_id is None:  # a continued run keeps the params it has
            self.tracker.log_params(flatten(to_container(cfg)))
            if out is not None:
                store_run_id(out, self.tracker.run_id)

    @classmethod
    def for_job(cls, cfg, args) -> "MlflowLogger":
        """The controller's logger for the job of OpenRLHF's `args`."""
        return cls(cfg, output_dir=job_output_dir(args), resume=resumes_from_checkpoint(args))

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    def log_train(self, global_step: int, logs_dict: Mapping[str, Any]) -> None:
        metrics = trapo_metrics(logs_dict, n_levels=self.n_levels, log_levels=self.log_levels)
        if metrics:
            self.tracker.log_metrics(metrics, step=int(global_step))

    def log_eval(self, global_step: int, logs_dict: Mapping[str, Any]) -> None:
        metrics = {f"eval/{k}": float(v) for k, v in logs_dict.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if metrics:
            self.tracker.log_metrics(metrics, step=int(global_step))

    def close(self) -> None:
        self.tracker.finish("FINISHED")
