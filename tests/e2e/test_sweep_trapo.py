"""`python experiments/run.py -m method=trapo preset=smoke sweep=trust_region` on the real trainer: a trial that
produces NaN fails (Optuna FAIL, MLflow FAILED) and the sweep completes the others; the same command run again
continues the study under the same MLflow parent run."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)

# trial 0 diverges on purpose: lr=1e30 makes the loss non-finite at step 2 and the Trainer raises
# FloatingPointError; trial 1 is a normal run. train.lr is made a search dimension so the two can be enqueued.
COMMAND = ["method=trapo", "preset=smoke", "sweep=trust_region", "progress=false",
           "train.lr=choice(1e30,1e-4)",
           "hydra.sweeper.enqueue=[{method.alpha: 0.1, train.lr: 1e30},{method.alpha: 0.3, train.lr: 1e-4}]"]


@pytest.mark.slow
def test_trust_region_sweep_survives_a_failing_trial_and_resumes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def sweep(n):
        p = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "-m", *COMMAND,
                            f"hydra.sweeper.n_trials={n}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
        return optuna.load_study(study_name="trapo-trust_region-smoke",
                                 storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials

    S = optuna.trial.TrialState
    trials = sweep(2)
    assert [t.state for t in trials] == [S.FAIL, S.COMPLETE]
    assert "FloatingPointError" in trials[0].user_attrs["fail_reason"]
    assert trials[1].value is not None and 0.0 <= trials[1].value <= 1.0
    assert len(trials[1].intermediate_values) == 3  # smoke sweeps validate every step (conf/sweep_size/)

    trials = sweep(1)  # the same command again: the study grows
    assert len(trials) == 3

    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id),
                      key=lambda r: int(r.data.params["optuna_trial"]))
    assert len(children) == 3 == len(runs) - 1
    alphas = [float(r.data.params["method.alpha"]) for r in children]
    assert alphas[:2] == [0.1, 0.3] and len(set(alphas)) == 3
    assert [r.info.status for r in children[:2]] == ["FAILED", "FINISHED"]
    assert "valid/accuracy" in children[1].data.metrics
    best = max(t.value for t in trials if t.state == S.COMPLETE)
    assert parents[0].data.metrics["best_value"] == pytest.approx(best)


@pytest.mark.slow
def test_the_documented_smoke_sweep_scores_trials_apart_and_prunes(tmp_path):
    """docs/sweeps.md's smoke command: its objective moves (trials score differently) and the median pruner stops
    a trial, as the docs say (conf/sweep_size/smoke_trust_region.yaml)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "-m", "method=trapo", "preset=smoke",
                        "sweep=trust_region", "hydra.sweeper.n_trials=3", "progress=false"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    trials = optuna.load_study(study_name="trapo-trust_region-smoke", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    S = optuna.trial.TrialState
    assert len(trials) == 3 and S.PRUNED in [t.state for t in trials], [(t.state, t.intermediate_values) for t in trials]
    first_step = [t.intermediate_values[1] for t in trials]
    assert len(set(first_step)) == 3, first_step  # three alphas, three different validation scores
