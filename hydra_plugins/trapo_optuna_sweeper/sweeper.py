"""The Hydra Sweeper class. A thin shell: Hydra imports this module at every start-up to discover plugins,
so the Optuna/MLflow machinery lives in _impl.py and is imported only when a sweep starts."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class TrapoOptunaSweeper(Sweeper):
    def __init__(self, direction: str, study_name: Optional[str], storage: Optional[str], n_trials: int,
                 n_jobs: int, params: Dict[str, Any], enqueue: List[Dict[str, Any]], report_metric: str,
                 max_failures: Optional[int], sampler: DictConfig, pruner: DictConfig, mlflow: DictConfig) -> None:
        from hydra_plugins.trapo_optuna_sweeper._impl import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(
            direction=direction, study_name=study_name, storage=storage, n_trials=n_trials, n_jobs=n_jobs,
            params=params, enqueue=enqueue, report_metric=report_metric, max_failures=max_failures,
            sampler=sampler, pruner=pruner, mlflow=mlflow,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self._impl.sweep(arguments)
