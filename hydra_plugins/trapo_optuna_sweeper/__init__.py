"""trapo's Hydra sweeper: Optuna (TPE sampler, median pruner, RDB storage) with MLflow parent/child runs.

Select it with `override /hydra/sweeper: trapo_optuna` (the configs in conf/sweep/ do). Why a project-local
plugin rather than the published hydra-optuna-sweeper: see docs/sweeps.md.

Hydra imports every public module of every `hydra_plugins` package at each start-up, so the modules it scans
(this one, config.py, sweeper.py) import nothing heavy; Optuna, MLflow and matplotlib are loaded by the
`_`-prefixed modules only when a sweep or a trial actually runs.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

__all__ = ["trial_callbacks"]


def trial_callbacks(cfg: Any) -> list[Callable[[int, Mapping[str, float]], None]]:
    """Callbacks for a training job: [] unless the job is a trial launched by this sweeper.

    The callback reports each periodic validation score to the Optuna trial and raises optuna.TrialPruned when
    the pruner says stop; it works whether the job runs in the sweeper's process or in another one.
    """
    from hydra_plugins.trapo_optuna_sweeper._job import trial_callbacks as _impl

    return _impl(cfg)
