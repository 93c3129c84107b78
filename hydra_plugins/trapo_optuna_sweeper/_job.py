"""The trial side: what runs inside a training job launched by the sweeper.

The job learns which trial it is from the `optuna_trial=N` override and where the study lives from its own Hydra
config (hydra.sweeper.study_name/storage, which the sweeper pins for every job). In the sweeper's process (the
basic launcher) the sweeper also hands over the live Trial object, which is the only way an in-memory study can
prune; any other launcher (another process or machine) loads the trial from the RDB storage.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

from hydra_plugins.trapo_optuna_sweeper.config import TARGET, TRIAL_KEY

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
# optuna is imported where it is used: every training job calls trial_callbacks, most are not trials

# (study name, trial number) -> Trial, filled by the sweeper around each launch in its own process
ACTIVE_TRIALS: dict[tuple[str, int], optuna.Trial] = {}


def make_pruner(conf: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    import optuna

    kind = conf.get("type", "median")
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(conf.get("n_startup_trials", 5)),
                                           n_warmup_steps=int(conf.get("n_warmup_steps", 0)),
                                           interval_steps=int(conf.get("interval_steps", 1)))
    if kind in ("none", None):
        return optuna.pruners.NopPruner()
    raise ValueError(f"hydra.sweeper.pruner.type must be 'median' or 'none', got {kind!r}")


class PruningCallback:
    """Trainer callback: report the validation score at `step`, raise optuna.TrialPruned if the pruner says so."""

    def __init__(self, study_name: str, storage: str | None, number: int, pruner_conf: Mapping[str, Any],
                 metric: str):
        self.study_name, self.storage, self.number = study_name, storage, int(number)
        self.pruner_conf, self.metric = dict(pruner_conf), metric
        self._trial: optuna.Trial | None = None

    def trial(self) -> optuna.Trial | None:
        import optuna

        if self._trial is None:
            self._trial = ACTIVE_TRIALS.get((self.study_name, self.number))
        if self._trial is None and self.storage:
            storage = optuna.storages.RDBStorage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      pruner=make_pruner(self.pruner_conf))
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.number)
            self._trial = optuna.Trial(study, trial_id)
        return self._trial

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return  # nothing to report; a NaN objective fails the trial at the end
        trial = self.trial()
        if trial is None:
            log.warning("trial %d: the study is in memory and this job runs in another process; no pruning",
                        self.number)
            self.metric = ""  # warn once
            return
        import optuna

        trial.report(float(value), step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.number} pruned at step {step}: {self.metric}={value:.4g} "
                                     f"is below the median of earlier trials at this step")


def trial_callbacks(cfg: Any) -> list[Callable[[int, Mapping[str, float]], None]]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    sweeper = hc.sweeper
    if sweeper is None or sweeper.get("_target_") != TARGET:
        return []
    if hc.mode != RunMode.MULTIRUN:
        # `run.py sweep=trust_region` without -m composes the sweep config but launches one plain run
        log.warning("a sweep config is selected but Hydra is not in multirun mode: this is a single run, not a "
                    "sweep (add -m to sweep)")
        return []
    number = cfg.get(TRIAL_KEY) if hasattr(cfg, "get") else None
    if number is None:
        return []
    return [PruningCallback(str(sweeper.study_name), sweeper.storage, int(number), sweeper.pruner,
                            str(sweeper.report_metric))]
