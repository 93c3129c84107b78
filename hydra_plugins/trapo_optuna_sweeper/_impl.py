"""The sweep loop: Optuna ask -> Hydra launch -> Optuna tell, one MLflow parent run over it all.

A trial's outcome comes from the Hydra JobReturn: a float -> COMPLETE; optuna.TrialPruned raised by the job
(the pruning callback) -> PRUNED; any other exception or a non-finite value -> FAIL, logged, and the sweep goes
on. Ctrl-C marks the running trial(s) FAIL, ends the parent run KILLED and exits 130; the study is already
saved (every tell is committed), so rerunning the same command resumes it.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.trapo_optuna_sweeper import _job
from hydra_plugins.trapo_optuna_sweeper._space import (Param, SearchSpaceError, format_value, override,
                                                        param_from_override, param_from_spec)
from hydra_plugins.trapo_optuna_sweeper.config import TRIAL_KEY

log = logging.getLogger(__name__)
TrialState = optuna.trial.TrialState


def make_sampler(conf: Mapping[str, Any], n_existing: int) -> optuna.samplers.BaseSampler:
    seed = conf.get("seed")
    seed = None if seed is None else int(seed) + n_existing
    kind = conf.get("type", "tpe")
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(conf.get("n_startup_trials", 10)),
                                          multivariate=bool(conf.get("multivariate", False)))
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler.type must be 'tpe' or 'random', got {kind!r}")


class OptunaSweeperImpl(Sweeper):
    def __init__(self, *, direction: str, study_name: str | None, storage: str | None, n_trials: int,
                 n_jobs: int, params: Mapping[str, Any], enqueue: Sequence[Mapping[str, Any]], report_metric: str,
                 max_failures: int | None, sampler: DictConfig, pruner: DictConfig, mlflow: DictConfig) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction must be 'maximize' or 'minimize', got {direction!r}")
        if int(n_trials) < 0 or int(n_jobs) < 1:
            raise ValueError(f"hydra.sweeper: n_trials must be >= 0 and n_jobs >= 1, got {n_trials}, {n_jobs}")
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.max_failures = int(n_trials), int(n_jobs), max_failures
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params)
        self.enqueue = [dict(OmegaConf.to_container(e, resolve=True)) if isinstance(e, DictConfig) else dict(e)
                        for e in enqueue]
        self.report_metric = report_metric
        self.sampler_conf = OmegaConf.to_container(sampler, resolve=True) if isinstance(sampler, DictConfig) else dict(sampler)
        self.pruner_conf = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else dict(pruner)
        self.mlflow_conf = OmegaConf.to_container(mlflow, resolve=True) if isinstance(mlflow, DictConfig) else dict(mlflow)
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    # ---- the search space -------------------------------------------------------------------------
    def _space(self, arguments: list[str]) -> tuple[dict[str, Param], list[str]]:
        """hydra.sweeper.params, then the command line (which wins): search dimensions and fixed overrides."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space: dict[str, Param] = {}
        fixed: dict[str, str] = {}
        for key, spec in self.params.items():
            if isinstance(spec, Mapping):
                space[key] = param_from_spec(key, spec)
            elif isinstance(spec, str):
                ov = parser.parse_override(f"{key}={spec}")
                if ov.is_sweep_override():
                    space[key] = param_from_override(ov)
                else:
                    fixed[key] = f"{key}={spec}"
            else:
                fixed[key] = override(key, spec)
        for ov in parser.parse_overrides(arguments):
            key = ov.get_key_element()
            if ov.is_sweep_override():
                space[key] = param_from_override(ov)
                fixed.pop(key, None)
            else:
                space.pop(key, None)
                fixed[key] = ov.input_line
        # the sweeper sets these for every trial
        reserved = {self.mlflow_conf.get("parent_key"), TRIAL_KEY, f"++{TRIAL_KEY}", f"+{TRIAL_KEY}"}
        for key in reserved & set(fixed):
            log.warning("ignoring the override %s: the sweeper sets it for each trial", fixed.pop(key))
        return space, list(fixed.values())

    def _open_study(self) -> optuna.Study:
        name = self.study_name or str(self.config.hydra.job.name)
        storage = optuna.storages.RDBStorage(self.storage) if self.storage else None
        # a seeded sampler is re-seeded past the trials already there, so a resumed sweep explores new points
        try:
            n_existing = len(optuna.load_study(study_name=name, storage=storage).trials) if storage else 0
        except KeyError:
            n_existing = 0
        study = optuna.create_study(study_name=name, storage=storage, direction=self.direction,
                                    sampler=make_sampler(self.sampler_conf, n_existing),
                                    pruner=_job.make_pruner(self.pruner_conf), load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"study {name!r} in {_redact(self.storage)} is set to {study.direction.name.lower()}, "
                             f"not {self.direction}; choose another hydra.sweeper.study_name")
        return study

    def _enqueue(self, study: optuna.Study, space: Mapping[str, Param]) -> None:
        for entry in self.enqueue:
            # a key fixed on the command line (method.alpha=0.2) is no longer searched: its fixed value wins
            dropped = sorted(set(entry) - set(space))
            if dropped:
                log.info("enqueued trial %s: %s not searched in this sweep, left out", entry, dropped)
            raw: dict[str, Any] = {}
            for key, value in entry.items():
                if key in space:
                    raw.update(space[key].raw(value))
            if raw:
                study.enqueue_trial(raw, skip_if_exists=True)  # a resumed sweep does not repeat its baseline

    # ---- the loop ------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        space, fixed = self._space(arguments)
        if not space:
            raise SearchSpaceError("the sweep has no search space: set hydra.sweeper.params (conf/sweep/*.yaml) or "
                                   "pass a sweep on the command line, e.g. method.alpha='tag(log,interval(0.01,1))'")
        study = self._open_study()
        n_before = sum(t.state != TrialState.WAITING for t in study.trials)
        self._enqueue(study, space)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        parent = self._parent(study, space)
        log.info("Optuna study %r in %s: %d trial(s) so far, adding %d; search space %s",
                 study.study_name, _redact(self.storage), n_before, self.n_trials, sorted(space))
        if parent is not None:
            log.info("MLflow parent run %s (tracking URI %s)", parent.run_id, _tracking_uri())

        returns: list[Sequence[JobReturn]] = []
        pending: list[optuna.Trial] = []
        failures, status = 0, "FAILED"
        try:
            remaining = self.n_trials
            while remaining > 0:
                trials = [study.ask() for _ in range(min(self.n_jobs, remaining))]
                pending = list(trials)
                batch = [self._overrides(t, space, fixed, study.study_name, parent) for t in trials]
                results = self._launch(study.study_name, trials, batch)
                returns.append(results)
                for trial, ret in zip(trials, results):
                    failed = self._tell(study, trial, ret, parent)
                    pending.remove(trial)
                    failures += failed
                remaining -= len(trials)
                if self.max_failures is not None and failures >= int(self.max_failures):
                    raise HydraException(f"{failures} trial(s) failed (hydra.sweeper.max_failures="
                                         f"{self.max_failures}); stopping the sweep")
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            self._abandon(study, pending, parent, "interrupted (Ctrl-C)")
            log.warning("Interrupted. The study %r is saved in %s (running trial(s) marked FAIL); rerun the same "
                        "command to resume it.", study.study_name, _redact(self.storage))
            raise SystemExit(130) from None  # no traceback: this is the clean way out
        except BaseException as e:
            self._abandon(study, pending, parent, f"sweep stopped: {type(e).__name__}: {e}")
            raise
        finally:
            summary = self._summary(study)
            OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
            if parent is not None:
                try:
                    parent.finish(study, status, sweep_dir, summary)
                except Exception as e:  # never mask the sweep's own outcome
                    log.warning("could not finish the MLflow parent run: %s: %s", type(e).__name__, e)
        log.info("Best trial %s: value %s, params %s", summary.get("best_trial"), summary.get("best_value"),
                 summary.get("best_params"))
        return returns

    def _overrides(self, trial: optuna.Trial, space: Mapping[str, Param], fixed: list[str], study_name: str,
                   parent) -> list[str]:
        sampled = [override(key, p.suggest(trial)) for key, p in space.items()]
        extra = [f"++{TRIAL_KEY}={trial.number}",
                 # pin the study for the job: its own config may resolve the name differently (e.g. ${method.name}
                 # when the method itself is searched)
                 f"hydra.sweeper.study_name={format_value(study_name)}"]
        if parent is not None:
            extra.append(f"{self.mlflow_conf['parent_key']}={parent.run_id}")
        return fixed + sampled + extra

    def _launch(self, study_name: str, trials: list[optuna.Trial], batch: list[list[str]]) -> Sequence[JobReturn]:
        try:
            self.validate_batch_is_legal(batch)
        except Exception as e:
            raise HydraException(f"trial overrides {batch[0]} do not compose ({type(e).__name__}: {e}); "
                                 "check hydra.sweeper.params against the config") from None
        for t in trials:
            _job.ACTIVE_TRIALS[(study_name, t.number)] = t
        # job numbers follow trial numbers where they can (multirun/<...>/<trial>_<method>) but never repeat
        first = max(self.job_idx, trials[0].number)
        try:
            results = self.launcher.launch(batch, initial_job_idx=first)
        finally:
            for t in trials:
                _job.ACTIVE_TRIALS.pop((study_name, t.number), None)
        self.job_idx = first + len(batch)
        return results

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, parent) -> bool:
        """Record a finished job in the study and in MLflow. Returns True if the trial failed."""
        state, value, reason = TrialState.COMPLETE, None, None
        if ret.status == JobStatus.COMPLETED:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                state, reason = TrialState.FAIL, f"the job returned {ret.return_value!r}, not a number"
            if value is not None and not math.isfinite(value):
                state, reason, value = TrialState.FAIL, f"the objective is {value}", None
        else:
            err = ret._return_value  # the exception the job raised (JobReturn.return_value would re-raise it)
            if isinstance(err, optuna.TrialPruned):
                state, reason = TrialState.PRUNED, str(err)
            else:
                state, reason = TrialState.FAIL, f"{type(err).__name__}: {err}"
                log.warning("trial %d failed; the sweep goes on", trial.number,
                            exc_info=(type(err), err, err.__traceback__) if isinstance(err, BaseException) else None)
        if ret.hydra_cfg is not None:
            trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
        if reason:
            trial.set_user_attr("fail_reason", reason[:2000])
        values = _trial_values(trial)
        child = self._child(parent, trial, state, values)
        frozen = study.tell(trial, value, state=state) if state == TrialState.COMPLETE else study.tell(trial, state=state)
        log.info("trial %d %s%s %s", trial.number, state.name, f" value={value:.4g}" if value is not None else "",
                 values)
        if parent is not None:
            try:
                parent.record_trial(frozen, child, reason, study)
            except Exception as e:  # MLflow trouble must not lose the study's record of the trial
                log.warning("trial %d: could not update MLflow: %s: %s", trial.number, type(e).__name__, e)
        return state == TrialState.FAIL

    @staticmethod
    def _child(parent, trial: optuna.Trial, state: TrialState, values: Mapping[str, Any]) -> str | None:
        """The trial's MLflow child run, recorded on the trial (before tell: a told trial is read-only)."""
        if parent is None:
            return None
        try:
            child = parent.child(trial.number, state, values)
            trial.set_user_attr("mlflow_run_id", child)
            return child
        except Exception as e:
            log.warning("trial %d: could not find its MLflow run: %s: %s", trial.number, type(e).__name__, e)
            return None

    def _abandon(self, study: optuna.Study, pending: list[optuna.Trial], parent, reason: str) -> None:
        """Trials still RUNNING when the sweep stops: FAIL in Optuna, KILLED (Ctrl-C) or FAILED in MLflow."""
        interrupted = reason.startswith("interrupted")
        for trial in pending:
            try:
                trial.set_user_attr("fail_reason", reason)
                child = self._child(parent, trial, TrialState.FAIL, _trial_values(trial))
                frozen = study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d marked FAIL: %s", trial.number, reason)
                if parent is not None:
                    parent.record_trial(frozen, child, reason, study)
                    if interrupted and child is not None:
                        parent.client.set_terminated(child, status="KILLED")
            except Exception as e:
                log.warning("could not mark trial %d as failed: %s: %s", trial.number, type(e).__name__, e)

    def _parent(self, study: optuna.Study, space: Mapping[str, Param]):
        if not self.mlflow_conf.get("enabled", True):
            return None
        import json

        from hydra_plugins.trapo_optuna_sweeper._mlflow import ParentRun

        tags = {"optuna.study": study.study_name, "optuna.storage": _redact(self.storage),
                "optuna.direction": self.direction, "optuna.sampler": json.dumps(self.sampler_conf),
                "optuna.pruner": json.dumps(self.pruner_conf),
                "sweep.search_space": json.dumps(self.params, default=str)[:5000],
                "sweep.command": _hide_passwords(" ".join(sys.argv))[:5000]}
        from trapo.tracking import git_commit

        cfg = self.config
        sha, dirty = git_commit()
        tags.update({"run_dir": str(Path(str(cfg.hydra.sweep.dir)).resolve()),
                     "method": str(OmegaConf.select(cfg, "method.name", default="")),
                     "preset": str(OmegaConf.select(cfg, "preset_name", default="")),
                     "mlflow.source.name": "experiments/run.py",
                     "mlflow.source.type": "LOCAL"})
        if sha:
            tags.update({"mlflow.source.git.commit": sha, "git_commit": sha, "git_dirty": str(dirty).lower()})
        return ParentRun(study, str(self.mlflow_conf.get("experiment")), tags)

    def _summary(self, study: optuna.Study) -> dict[str, Any]:
        from hydra_plugins.trapo_optuna_sweeper._mlflow import display_params

        counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in TrialState}
        out: dict[str, Any] = {"name": "trapo_optuna", "study_name": study.study_name,
                               "storage": _redact(self.storage), "direction": self.direction,
                               "trials": {k: v for k, v in counts.items() if v}}
        try:
            best = study.best_trial
            out.update(best_trial=best.number, best_value=best.value, best_params=display_params(best.params, best.user_attrs))
        except ValueError:
            out.update(best_trial=None, best_value=None, best_params={})
        return out


def _trial_values(trial: optuna.Trial) -> dict[str, Any]:
    """The trial's parameters as the job saw them (ordered lists rather than their raw fractions)."""
    from hydra_plugins.trapo_optuna_sweeper._mlflow import display_params

    return display_params(trial.params, trial.user_attrs)


def _hide_passwords(text: str) -> str:
    """scheme://user:password@host -> scheme://user:***@host (a storage URL may be on the command line)."""
    import re

    return re.sub(r"(://[^:/@\s]*):[^@/\s]*@", r"\1:***@", text)


def _redact(url: str | None) -> str:
    from hydra_plugins.trapo_optuna_sweeper._mlflow import redact

    return redact(url)


def _tracking_uri() -> str:
    from hydra_plugins.trapo_optuna_sweeper._mlflow import tracking_uri

    return tracking_uri()
