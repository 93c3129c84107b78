"""MLflow tracking store: concurrent jobs opening one fresh sqlite file (reproduce, parallel multiruns)."""

import multiprocessing as mp
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _start_run(args):
    uri, i = args
    os.environ["MLFLOW_TRACKING_URI"] = uri
    sys.path.insert(0, str(ROOT))
    from trapo.tracking import Tracker

    tracker = Tracker("race", run_name=f"job{i}")
    tracker.finish("FINISHED")
    return tracker.run_id


def test_jobs_opening_a_fresh_sqlite_store_at_once_all_start(tmp_path):
    # Without the store lock the second process runs MLflow's schema migration over the first one's
    # ("duplicate column name: step") or creates the experiment twice.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(3) as pool:
        run_ids = pool.map(_start_run, [(uri, i) for i in range(3)])
    assert len(set(run_ids)) == 3

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e for e in client.search_experiments() if e.name == "race"]
    assert len(exps) == 1
    assert len(client.search_runs([exps[0].experiment_id])) == 3


def test_run_names_keep_settings_that_share_a_leaf_apart_and_leave_out_threads():
    from trapo.tracking import differing_overrides, run_name

    ov = differing_overrides(["rollout.max_new_tokens=48", "eval.max_new_tokens=48", "engine.num_threads=1",
                              "method.alpha=1.0", "method.alpha=1.0"])
    name = run_name("trapo", 0, "smoke", ov, when=0)
    assert name.startswith("trapo rollout.max_new_tokens=48 eval.max_new_tokens=48 alpha=1.0 s0 smoke "), name
    assert "num_threads" not in name and name.count("alpha") == 1
