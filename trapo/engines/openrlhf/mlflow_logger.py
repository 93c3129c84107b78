"""MLflow for OpenRLHF runs, with the local engine's metric names.

OpenRLHF 0.11.2 logs only to wandb or tensorboard (`BasePPOTrainer.__init__` creates
`self.tensorboard_logger`, `save_logs_and_checkpoints` calls its `log_train`/`log_eval`). `MlflowLogger`
has the same three methods and takes that slot (`patches.ppo_trainer_class`). `trapo_metrics` turns the
step status of OpenRLHF (with the `trapo/*` values of `actor.TrapoActorPPOTrainer`) into the metrics
that the local trainer logs (`trapo.rl_step.rl_metrics`), so runs of both engines compare in one experiment.
"""

from __future__ import annotations

import math
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
    for k, v in s.items():
        if k in TIMING:
            out[TIMING[k]] = v
        elif k.startswith("relift/"):  # ReLIFT's buffer and SFT step (trapo/engines/openrlhf/relift.py)
            out["train/relift_" + k[len("relift/"):]] = v
        elif not k.startswith("trapo/") and k != "actor_grad_norm":
            out[f"openrlhf/{k}"] = v
    return {k: float(v) for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


class MlflowLogger:
    """OpenRLHF's logger interface (`log_train`, `log_eval`, `close`) on `trapo.tracking.Tracker`."""

    def __init__(self, cfg, tracker=None):
        from trapo.config import guidance_schedule
        from trapo.engines.openrlhf.settings import to_container
        from trapo.tracking import Tracker, flatten

        m = cfg.method
        self.n_levels = guidance_schedule(cfg).n_rounds  # as the local trainer: the configured schedule's rounds
        self.log_levels = logs_guidance(m)
        tracking = cfg.tracking
        self.tracker = tracker or Tracker(
            str(tracking.experiment), run_name=str(tracking.get("run_name") or m.name),
            tags={"method": str(m.name), "engine": "openrlhf"}, parent_run_id=tracking.get("parent_run_id"))
        self.tracker.log_params(flatten(to_container(cfg)))

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
