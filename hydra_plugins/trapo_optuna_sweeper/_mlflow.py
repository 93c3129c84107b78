"""The sweep's MLflow parent run: one per study, found again on resume through a study user attribute.

Children are the training jobs' own runs (the Trainer creates them with tag mlflow.parentRunId from the
`tracking.parent_run_id` override). After each trial the parent tags its child with the Optuna outcome, turns a
pruned child (which the Trainer ended as FAILED, since TrialPruned is an exception) into KILLED, and, if the job
failed before it could open a run, creates a FAILED child itself so that every trial is visible in MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import optuna
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hydra_plugins.trapo_optuna_sweeper.config import TRIAL_KEY

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
TrialState = optuna.trial.TrialState
_RUN_STATUS = {TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def tracking_uri() -> str:
    from trapo.tracking import tracking_uri as _uri  # the same default as the training jobs

    return _uri()


def store_lock(uri: str):
    from trapo.tracking import store_lock as _lock

    return _lock(uri)


def _metric_key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


class ParentRun:
    def __init__(self, study: optuna.Study, experiment: str, tags: Mapping[str, str]):
        with store_lock(tracking_uri()):  # first use creates the schema: one process at a time
            from trapo.tracking import ensure_experiment, relocate_artifacts

            self.client = MlflowClient(tracking_uri())
            relocate_artifacts(tracking_uri())
            self.experiment_id = ensure_experiment(self.client, experiment)
        self.run_id = self._existing(study.user_attrs.get(PARENT_ATTR))
        if self.run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=f"sweep {study.study_name}",
                                         tags={"sweep.role": "parent", **tags})
            self.run_id = run.info.run_id
            study.set_user_attr(PARENT_ATTR, self.run_id)
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)

    def _existing(self, run_id: str | None) -> str | None:
        """The study's parent run if this tracking store has it (a resumed sweep keeps one parent)."""
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            log.warning("the study's MLflow parent run %s is not in %s; starting a new parent run",
                        run_id, tracking_uri())
            return None
        return None if run.info.lifecycle_stage == "deleted" else run_id

    # ---- per trial ------------------------------------------------------------------------------
    def children(self, number: int) -> list:
        return self.client.search_runs(
            self._experiment_ids(),
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and params.{TRIAL_KEY} = '{number}'",
        )

    def _experiment_ids(self) -> list[str]:
        # children live in the training job's experiment, which need not be the parent's
        return [e.experiment_id for e in self.client.search_experiments()]

    def child(self, number: int, state: TrialState, values: Mapping[str, Any]) -> str:
        """The trial's child run id; created (ended) here if the job never opened one, e.g. an invalid config."""
        kids = self.children(number)
        if kids:
            return kids[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}",
                                     tags={"mlflow.parentRunId": self.run_id})
        self.client.log_batch(run.info.run_id, params=[Param(TRIAL_KEY, str(number))] +
                              [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                               for k, v in values.items()])
        self.client.set_terminated(run.info.run_id, status=_RUN_STATUS.get(state, "FINISHED"))
        return run.info.run_id

    def record_trial(self, trial: optuna.trial.FrozenTrial, child_id: str | None, reason: str | None,
                     study: optuna.Study) -> None:
        """Tag the trial's child run with the outcome; log the trial's score and the best so far on the parent."""
        if child_id is not None:
            self.client.set_tag(child_id, "mlflow.runName", f"trial-{trial.number}")
            self.client.set_tag(child_id, "optuna.trial", str(trial.number))
            self.client.set_tag(child_id, "optuna.study", study.study_name)
            self.client.set_tag(child_id, "optuna.state", trial.state.name)
            if trial.value is not None:
                self.client.set_tag(child_id, "optuna.value", repr(trial.value))
            if reason:
                self.client.set_tag(child_id, "optuna.fail_reason", reason[:5000])
            want = _RUN_STATUS.get(trial.state)
            # a pruned run ended FAILED (TrialPruned is an exception); a NaN objective's run ended FINISHED
            if want and self.client.get_run(child_id).info.status != want:
                self.client.set_terminated(child_id, status=want)
        ts = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else 0
        metrics = [Metric(f"trials/{s.name.lower()}", float(sum(t.state == s for t in study.trials)), ts,
                          trial.number) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        if trial.value is not None and trial.state == TrialState.COMPLETE and math.isfinite(trial.value):
            metrics.append(Metric("trial/value", float(trial.value), ts, trial.number))
        best = _best(study)
        if best is not None:
            metrics.append(Metric("best_value", float(best.value), ts, trial.number))
            for k, v in display_params(best.params, best.user_attrs).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics.append(Metric(_metric_key(f"best/{k}"), float(v), ts, trial.number))
                self.client.set_tag(self.run_id, f"best.{k}", json.dumps(v))
            self.client.set_tag(self.run_id, "best.trial", str(best.number))
        self.client.log_batch(self.run_id, metrics=metrics)

    # ---- at the end ----------------------------------------------------------------------------------
    def finish(self, study: optuna.Study, status: str, out_dir: Path, summary: Mapping[str, Any]) -> None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "best.json").write_text(json.dumps(summary, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(out_dir / "best.json"))
            for path in plots(study, out_dir):
                self.client.log_artifact(self.run_id, str(path), "plots")
        finally:
            self.client.set_terminated(self.run_id, status=status)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def display_params(params: Mapping[str, Any], user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's params, with an ordered list's raw fractions replaced by the list the job received."""
    out = dict(params)
    for key, values in user_attrs.items():
        if isinstance(values, list) and any(k.startswith(f"{key}.u") for k in out):
            out = {k: v for k, v in out.items() if not k.startswith(f"{key}.u")}
            out[key] = values
    return out


def plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimisation history and parameter importances (matplotlib: plotly is not a dependency)."""
    import matplotlib

    matplotlib.use("Agg")  # a sweep runs headless
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    out: list[Path] = []
    jobs = [("optimization_history.png", vis.plot_optimization_history, 1),
            ("param_importances.png", vis.plot_param_importances, 2)]
    for name, fn, need in jobs:
        if len(done) < need:
            log.info("%s skipped: needs %d complete trial(s), the study has %d", name, need, len(done))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
                ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            out.append(out_dir / name)
        except Exception as e:  # e.g. importances of a study whose scores never varied
            log.info("%s skipped: %s: %s", name, type(e).__name__, e)
    if len(done) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(study)
            (out_dir / "param_importances.json").write_text(json.dumps(imp, indent=2))
            out.append(out_dir / "param_importances.json")
        except Exception as e:
            log.info("param_importances.json skipped: %s: %s", type(e).__name__, e)
    return out


def redact(url: str | None) -> str:
    """A storage URL fit for logs and tags: the password is hidden."""
    if not url:
        return "in-memory"
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url
