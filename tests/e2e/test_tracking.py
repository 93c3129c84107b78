"""MLflow tracking store: concurrent jobs opening one fresh sqlite file (reproduce, parallel multiruns)."""

import multiprocessing as mp
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def _log_artifact(cwd, experiment, run_name, path, run_id=None):
    """In a process of its own (as each training job is), start or resume a run and log one artifact."""
    import subprocess

    code = ("import sys; from trapo.tracking import Tracker; "
            "t = Tracker(sys.argv[1], run_name=sys.argv[2], run_id=sys.argv[4] or None); "
            "t.log_artifact(sys.argv[3]); t.finish('FINISHED'); print(t.experiment_id, t.run_id)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, experiment, run_name, str(path), run_id or ""], cwd=cwd,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()[-2:]


def test_a_moved_store_writes_artifacts_beside_its_db_not_into_the_old_folder(tmp_path):
    # MLflow writes `<cwd>/mlruns/<id>` into mlflow.db as an absolute path when it creates an experiment, so
    # before relocate_artifacts a moved checkout recreated the old folder and wrote its artifacts there.
    from mlflow.tracking import MlflowClient

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "a.txt").write_text("first")
    exp, first = _log_artifact(old, "moved", "first", old / "a.txt")
    assert (old / "mlruns" / exp / first / "artifacts" / "a.txt").exists()

    old.rename(new)
    (new / "b.txt").write_text("second")
    _log_artifact(new, "moved", "first", new / "b.txt", run_id=first)
    _, fresh = _log_artifact(new, "moved", "second", new / "b.txt")

    assert not old.exists(), "artifacts were written into the folder the store was created in"
    client = MlflowClient(f"sqlite:///{new / 'mlflow.db'}")
    for run_id in (first, fresh):
        art = new / "mlruns" / exp / run_id / "artifacts"
        assert (art / "b.txt").exists()
        assert client.get_run(run_id).info.artifact_uri.removeprefix("file://") == art.as_posix()
    assert (new / "mlruns" / exp / first / "artifacts" / "a.txt").read_text() == "first"


def test_relocate_leaves_an_artifact_location_the_user_chose(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from trapo.tracking import relocate_artifacts

    monkeypatch.chdir(tmp_path)
    client = MlflowClient("sqlite:///mlflow.db")
    chosen = (tmp_path / "elsewhere" / "artifacts").as_posix()
    exp = client.create_experiment("chosen", artifact_location=chosen)
    assert relocate_artifacts("sqlite:///mlflow.db") == 0
    assert client.get_experiment(exp).artifact_location.removeprefix("file://") == chosen


def test_a_store_created_away_from_the_cwd_is_pointed_home_without_a_warning(tmp_path, monkeypatch, caplog):
    """MLflow creates a new store's default experiment under `<cwd>/mlruns`; with the store elsewhere that is
    rewritten to `<db dir>/mlruns` quietly (no run has written there yet), and loudly once runs have."""
    import logging

    from mlflow.tracking import MlflowClient

    from trapo.tracking import relocate_artifacts

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(uri)
    assert client.get_experiment("0").artifact_location.removeprefix("file://").startswith((tmp_path / "cwd").as_posix())
    with caplog.at_level(logging.WARNING, logger="trapo.tracking"):
        assert relocate_artifacts(uri) == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # before: "kept its artifacts under"
    home = (tmp_path / "store" / "mlruns" / "0").as_posix()
    assert client.get_experiment("0").artifact_location.removeprefix("file://") == home
