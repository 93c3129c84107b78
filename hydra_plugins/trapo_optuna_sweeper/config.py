"""The sweeper's config schema, registered as `hydra/sweeper: trapo_optuna`.

No `from __future__ import annotations` here: Hydra's plugin scan executes this module before putting it in
sys.modules, and dataclasses cannot resolve string annotations of a module that is not there yet.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

TARGET = "hydra_plugins.trapo_optuna_sweeper.sweeper.TrapoOptunaSweeper"
# the job override that tells a training job which Optuna trial it is (logged with the run's params, which is
# also how the sweeper finds the trial's MLflow child run)
TRIAL_KEY = "optuna_trial"


@dataclass
class SamplerConf:
    type: str = "tpe"  # tpe | random
    # with a seed, a resumed sweep draws from seed + (trials already in the study), so it never replays
    # the first invocation's proposals
    seed: Optional[int] = None
    n_startup_trials: int = 10  # TPE: random proposals before the density model takes over
    multivariate: bool = False  # TPE: model the parameters jointly


@dataclass
class PrunerConf:
    type: str = "median"  # median | none
    n_startup_trials: int = 5  # complete trials before anything is pruned
    n_warmup_steps: int = 0  # training steps of a trial before it can be pruned
    interval_steps: int = 1


@dataclass
class MlflowConf:
    enabled: bool = True
    # the experiment of the parent run; the children go wherever the training job logs (tracking.experiment)
    experiment: str = "${oc.select:tracking.experiment,sweeps}"
    parent_key: str = "tracking.parent_run_id"  # the job override that carries the parent run's id


@dataclass
class TrapoOptunaSweeperConf:
    _target_: str = TARGET
    direction: str = "maximize"  # of the job's return value (experiments/run.py: valid/accuracy)
    study_name: Optional[str] = None  # null: the Hydra job name
    # any SQLAlchemy URL (sqlite:///optuna.db, postgresql://user@host/db); null = in memory, no resume
    storage: Optional[str] = "sqlite:///optuna.db"
    n_trials: int = 10  # trials this invocation adds to the study (a rerun adds as many more)
    n_jobs: int = 1  # trials asked per launcher batch (the basic launcher still runs them one by one)
    # search space: config key -> {type: float|int|categorical|ordered, ...} or Hydra sweep syntax
    # (interval(0.01,1), tag(log,interval(...)), range(1,8), choice(a,b)); any other value is fixed
    params: Dict[str, Any] = field(default_factory=dict)
    # trials to run first, e.g. the paper's defaults: [{method.alpha: 0.1}] (skipped if already in the study)
    enqueue: List[Dict[str, Any]] = field(default_factory=list)
    report_metric: str = "valid/accuracy"  # the periodic score the pruner sees (Trainer callback key)
    max_failures: Optional[int] = None  # abort after this many failed trials in one invocation; null = never
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    mlflow: MlflowConf = field(default_factory=MlflowConf)


ConfigStore.instance().store(group="hydra/sweeper", name="trapo_optuna", node=TrapoOptunaSweeperConf,
                             provider="trapo")
