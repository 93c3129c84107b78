"""The trapo Optuna sweeper end to end on a toy Hydra app (seconds, no training): failed, NaN, pruned and
interrupted trials, resume, MLflow parent/child runs. tests/e2e/test_sweep_trapo.py runs it on the real trainer."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)

TOY_APP = textwrap.dedent("""
    import math, sys, time
    from pathlib import Path
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(config_path=".", config_name="toy", version_base="1.3")
    def main(cfg):
        from hydra_plugins.trapo_optuna_sweeper import trial_callbacks
        from trapo.tracking import Tracker, flatten

        callbacks = trial_callbacks(cfg)
        if cfg.x > 0.98:
            raise ValueError("invalid config, on purpose (before any MLflow run)")
        tracker = Tracker(cfg.tracking.experiment, run_name="toy", parent_run_id=cfg.tracking.parent_run_id)
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        status = "FAILED"
        try:
            if cfg.sleep:
                Path("started").write_text(str(cfg.optuna_trial))
                time.sleep(cfg.sleep)
            if cfg.x > 0.9:
                raise RuntimeError("boom, on purpose")
            if cfg.x < 0.1:
                status = "FINISHED"
                return float("nan")
            for step in (1, 2, 3):  # like Trainer: score every eval.every steps, callbacks may prune
                tracker.log_metrics({"valid/accuracy": cfg.x}, step=step)
                for cb in callbacks:
                    cb(step, {"valid/accuracy": cfg.x})
            status = "FINISHED"
            return cfg.x
        finally:
            tracker.finish(status)

    if __name__ == "__main__":
        main()
""")

TOY_CONF = textwrap.dedent("""
    defaults:
      - override hydra/sweeper: trapo_optuna
      - _self_
    x: 0.5
    sleep: 0
    tracking: {experiment: toy, parent_run_id: null}
    hydra:
      sweep: {dir: "multirun/${now:%H-%M-%S-%f}", subdir: "${hydra.job.num}"}
      sweeper:
        study_name: toy
        storage: sqlite:///optuna.db
        n_trials: 5
        params:
          x: {type: float, low: 0.0, high: 1.0}
        sampler: {type: random, seed: 0}
        pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}
""")


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy.py").write_text(TOY_APP)
    (tmp_path / "toy.yaml").write_text(TOY_CONF)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def run(*overrides, wait=True):
        cmd = [sys.executable, "toy.py", "-m", *overrides]
        if not wait:
            # SIGINT back to its default: a shell running pytest in the background (`pytest &`) starts it with
            # SIGINT ignored, the child would inherit that and Python would then never raise KeyboardInterrupt
            return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)

    return tmp_path, run


def _study(tmp_path):
    return optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _runs(tmp_path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = {r.data.tags.get("optuna.trial"): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return c, parents, children


def test_failed_nan_and_pruned_trials_do_not_stop_the_sweep_and_resume_continues(toy):
    tmp_path, run = toy
    # trials 0..4 in order: complete, raises, raises before MLflow, NaN, pruned (0.2 < median 0.8 at step 1)
    p = run("hydra.sweeper.enqueue=[{x: 0.8},{x: 0.95},{x: 0.99},{x: 0.05},{x: 0.2}]")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    S = optuna.trial.TrialState
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [S.COMPLETE, S.FAIL, S.FAIL, S.FAIL, S.PRUNED]
    assert trials[0].value == pytest.approx(0.8)
    assert "RuntimeError: boom" in trials[1].user_attrs["fail_reason"]
    assert "objective is nan" in trials[3].user_attrs["fail_reason"]
    assert trials[4].intermediate_values == {1: pytest.approx(0.2)}  # stopped at its first report

    c, parents, children = _runs(tmp_path)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(0.8)
    assert parent.data.tags["best.x"] == "0.8"
    arts = {a.path for a in c.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in arts
    status = {k: r.info.status for k, r in children.items()}
    assert status == {"0": "FINISHED", "1": "FAILED", "2": "FAILED", "3": "FAILED", "4": "KILLED"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert children["2"].data.params["x"] == "0.99"  # created by the sweeper: the job never opened a run
    assert trials[0].user_attrs["mlflow_run_id"] == children["0"].info.run_id

    # the same command again: the study and the parent run continue, enqueued trials are not repeated
    p = run("hydra.sweeper.enqueue=[{x: 0.8},{x: 0.95},{x: 0.99},{x: 0.05},{x: 0.2}]", "hydra.sweeper.n_trials=2")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert len(trials) == 7
    assert not {t.params["x"] for t in trials[5:]} & {0.8, 0.95, 0.99, 0.05, 0.2}
    _, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 7


def test_ctrl_c_leaves_the_study_consistent_and_resumable(toy):
    tmp_path, run = toy
    proc = run("sleep=60", "hydra.sweeper.n_trials=3", wait=False)
    deadline = time.time() + 300  # generous: CI machines can be heavily loaded
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the first trial never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    assert "rerun the same command to resume" in out

    S = optuna.trial.TrialState
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [S.FAIL]  # nothing left RUNNING, nothing else started
    assert "interrupted" in trials[0].user_attrs["fail_reason"]
    _, parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert children["0"].info.status == "KILLED"

    p = run("hydra.sweeper.n_trials=1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert len(_study(tmp_path).trials) == 2
    _, parents, _ = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["FINISHED"]  # the same parent, running again, then finished


def test_pruning_callback_works_from_another_process(tmp_path):
    """A job that is not in the sweeper's process loads its trial from the RDB storage by number."""
    from hydra_plugins.trapo_optuna_sweeper._job import ACTIVE_TRIALS, PruningCallback

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    t0 = study.ask()
    for step in (1, 2):
        t0.report(0.9, step)
    study.tell(t0, 0.9)
    t1 = study.ask()
    assert ("s", t1.number) not in ACTIVE_TRIALS
    pruner = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 2}
    cb = PruningCallback("s", url, t1.number, pruner, "valid/accuracy")
    cb(1, {"valid/accuracy": 0.1})  # warm-up step: reported, not pruned
    with pytest.raises(optuna.TrialPruned, match="pruned at step 2"):
        cb(2, {"valid/accuracy": 0.1})
    assert study.trials[1].intermediate_values == {1: 0.1, 2: 0.1}
    cb(3, {"other": 1.0})  # no score in this report: nothing happens


def test_not_a_trial_means_no_callbacks():
    from omegaconf import OmegaConf

    from hydra_plugins.trapo_optuna_sweeper import trial_callbacks

    assert trial_callbacks(OmegaConf.create({"x": 1})) == []
    # a trial's overrides rerun by hand (no Hydra multirun around it) is a plain run
    assert trial_callbacks(OmegaConf.create({"optuna_trial": 3})) == []
