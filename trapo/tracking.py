"""MLflow tracking: one run per training job, metrics logged in batches (one call per step).

Failures: a tracking store that cannot be reached when a run starts is an error (`check_reachable`, before
any work). Once the run exists, a failing call is retried (`retries`, exponential `backoff`); if it still
fails, what it carried is appended to `fallback_path` (JSON lines, `<run dir>/mlflow_fallback.jsonl` for the
trainer) and training goes on. Without a fallback path the last error is raised.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REPO_ROOT = Path(__file__).resolve().parents[1]
# MLflow 3's UI treats an experiment without this tag as a GenAI one (runs under "Evaluations")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# override keys a run's name and `overrides` tag leave out: they have their own tags, or name no setting
_NOT_A_SETTING = ("method", "seed", "preset", "progress", "resume", "optuna_trial", "hydra.", "tracking.",
                  "engine.num_threads")  # how fast, not what is trained
RETRIES = 3        # attempts per call once the run exists
BACKOFF_S = 1.0    # wait before the 2nd attempt; doubles after each failure


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Raise a RuntimeError naming the URI when the tracking store cannot be reached. Creates nothing."""
    uri = uri or tracking_uri()
    hint = "start the server or set MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db)"
    if uri.startswith(("http://", "https://")):
        import requests

        try:  # any HTTP answer means a server is there; only one attempt, so this takes seconds, not minutes
            requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as e:
            raise RuntimeError(f"MLflow tracking server {uri} is unreachable ({type(e).__name__}); {hint}") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise RuntimeError(f"MLflow tracking store {uri}: directory {db.parent} does not exist; {hint}")


@contextmanager
def store_lock(uri: str):
    """Serialise opening a sqlite store across processes.

    Two jobs opening a fresh sqlite file at once both run MLflow's schema migration ("duplicate column name")
    and may both create the experiment; an flock on `<db>.lock` makes the second wait for the first.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(uri[len("sqlite:///"):] + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def relocate_artifacts(uri: str) -> int:
    """Point a moved local store's artifact folders at `<db dir>/mlruns` again; returns the rows rewritten.

    MLflow stores each experiment's default artifact folder as an absolute path (`<cwd>/mlruns/<id>`) when it
    creates it, so a checkout that is moved or copied with its `mlflow.db` would write artifacts into the old
    folder (or fail where that folder is gone) and `mlflow ui` would look there. Only MLflow's default layout is
    rewritten, `<root>/mlruns/<experiment id>` and `<root>/mlruns/<experiment id>/<run id>/artifacts`; an
    artifact location a user chose is left as it is. Call with the store's lock held.
    """
    if not uri.startswith("sqlite:///"):
        return 0
    import sqlite3

    db = Path(uri[len("sqlite:///"):])
    if not db.exists():
        return 0
    root = (db.resolve().parent / "mlruns").as_posix()
    con = sqlite3.connect(db)
    changed = 0
    try:
        rows = con.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
        for exp_id, loc in rows:
            path = (loc or "").removeprefix("file://")
            m = re.fullmatch(r"(/.*)/mlruns/" + re.escape(str(exp_id)), path)
            if not m or f"{m.group(1)}/mlruns" == root:
                continue
            old = f"{m.group(1)}/mlruns/{exp_id}"
            new = f"{root}/{exp_id}"
            prefix = "file://" if loc.startswith("file://") else ""
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (prefix + new, exp_id))
            for run_uuid, art in con.execute("SELECT run_uuid, artifact_uri FROM runs WHERE experiment_id = ?",
                                             (exp_id,)).fetchall():
                art_path = (art or "").removeprefix("file://")
                if art_path == f"{old}/{run_uuid}/artifacts":
                    con.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?",
                                (("file://" if art.startswith("file://") else "") + f"{new}/{run_uuid}/artifacts",
                                 run_uuid))
                    changed += 1
            changed += 1
            n_runs = con.execute("SELECT COUNT(*) FROM runs WHERE experiment_id = ?", (exp_id,)).fetchone()[0]
            # an experiment with no run yet (a store MLflow has just created away from the cwd) has nothing to say
            (log.warning if n_runs else log.debug)(
                "MLflow store %s: experiment %s kept its artifacts under %s, from where the store was created; "
                "now %s", db, exp_id, old, new)
        con.commit()
    finally:
        con.close()
    return changed


def git_commit(repo: Path = REPO_ROOT) -> tuple[str | None, bool]:
    """(HEAD commit, whether tracked files differ from it); (None, False) outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return sha or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


def differing_overrides(overrides) -> list[str]:
    """The command-line overrides that change a setting (method, seed and preset have their own tags)."""
    out = []
    for o in overrides or ():
        key = str(o).split("=", 1)[0].lstrip("+~")
        if key in _NOT_A_SETTING or key.startswith(tuple(k for k in _NOT_A_SETTING if k.endswith("."))):
            continue
        out.append(str(o).lstrip("+"))
    return out


def short_settings(overrides) -> list[str]:
    """`key=value` with each key cut to its last part, unless two keys share it (`rollout.max_new_tokens=48
    eval.max_new_tokens=48` stay whole); repeated settings once."""
    pairs = [tuple(o.split("=", 1)) if "=" in o else (o, None) for o in dict.fromkeys(overrides)]
    leaves = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    out = []
    for (key, value), leaf in zip(pairs, leaves):
        name = leaf if leaves.count(leaf) == 1 else key
        item = name if value is None else f"{name}={value}"
        if item not in out:
            out.append(item)
    return out


def run_name(method: str, seed, preset: str | None, overrides=(), when: float | None = None) -> str:
    """`trapo alpha=1.0 s0 smoke 12-01 21:32`: what differs first, then seed, preset and start time."""
    parts = [str(method), *short_settings(overrides), f"s{seed}"] + ([str(preset)] if preset else [])
    return " ".join(parts + [time.strftime("%m-%d %H:%M", time.localtime(when))])


def run_tags(cfg, output_dir: str | Path, overrides=(), source: str = "experiments/run.py",
             command: str | None = None) -> dict[str, str]:
    """Tags to sort and filter runs by: method, seed, preset, the differing overrides, run dir, source, commit."""
    sha, dirty = git_commit()
    tags = {"method": str(cfg.method.name), "seed": str(cfg.seed), "preset": str(cfg.get("preset_name", "")),
            "overrides": " ".join(differing_overrides(overrides)), "run_dir": str(Path(output_dir).resolve()),
            "mlflow.source.name": source, "mlflow.source.type": "LOCAL", "mlflow.user": _user()}
    if command:
        tags["command"] = command
    if sha:
        tags.update({"mlflow.source.git.commit": sha, "git_commit": sha, "git_dirty": str(dirty).lower()})
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def ui_hint(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to look at a run: its page on a tracking server, or the `mlflow ui` command for a local store."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{page}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def ensure_experiment(client, name: str) -> str:
    """The experiment's id, created if missing, tagged as a classic (non-GenAI) experiment for MLflow 3's UI."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    for k, v in EXPERIMENT_KIND.items():
        if k not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, k, v)
    return exp.experiment_id


class Tracker:
    """A thin wrapper over MlflowClient so a multirun job never inherits another job's active run."""

    def __init__(self, experiment: str, run_name: str, run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, parent_run_id: str | None = None,
                 fallback_path: str | Path | None = None, retries: int | None = None,
                 backoff: float | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.fallback_path = Path(fallback_path) if fallback_path is not None else None
        self.retries = max(1, int(RETRIES if retries is None else retries))
        self.backoff = float(BACKOFF_S if backoff is None else backoff)
        uri = tracking_uri()
        check_reachable(uri)
        self._mlflow = mlflow
        try:
            with store_lock(uri):
                mlflow.set_tracking_uri(uri)
                self.client = MlflowClient(uri)  # creates or migrates the schema
                relocate_artifacts(uri)
                exp_id = ensure_experiment(self.client, experiment)
            self.experiment_id, self.uri = exp_id, uri
            if run_id is not None:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
            else:
                all_tags = dict(tags or {})
                if parent_run_id:
                    all_tags["mlflow.parentRunId"] = parent_run_id
                run = self.client.create_run(exp_id, run_name=run_name, tags=all_tags)
                self.run_id = run.info.run_id
            self.run_name = self.client.get_run(self.run_id).info.run_name
        except Exception as e:
            raise RuntimeError(f"MLflow tracking store {uri}: cannot start the run ({type(e).__name__}: {e})") from e
        self._pending: list = []

    def _call(self, what: str, fn: Callable[[], None], record: Mapping[str, Any]) -> bool:
        """fn() with retries; on final failure `record` goes to the fallback file (or the error is raised)."""
        delay, err = self.backoff, None
        for attempt in range(self.retries):
            try:
                fn()
                return True
            except Exception as e:  # network, server, store errors: all retried the same way
                err = e
                if attempt + 1 < self.retries:
                    time.sleep(delay)
                    delay *= 2
        if self.fallback_path is None:
            raise err
        log.warning("MLflow %s failed %d times (%s: %s); written to %s instead", what, self.retries,
                    type(err).__name__, err, self.fallback_path)
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.fallback_path, "a") as fh:
            fh.write(json.dumps({"time": time.time(), "run_id": self.run_id, "call": what, **record,
                                 "error": f"{type(err).__name__}: {err}"}) + "\n")
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        def send():
            items = [Param(k, str(v)[:6000]) for k, v in params.items()]
            existing = self.client.get_run(self.run_id).data.params
            items = [p for p in items if p.key not in existing]  # a resumed run keeps its params
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

        self._call("log_params", send, {"params": {k: str(v)[:6000] for k, v in params.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            part = batch[i : i + 1000]
            self._call("log_metrics", lambda: self.client.log_batch(self.run_id, metrics=part),
                       {"step": step, "metrics": {m.key: m.value for m in part}})

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._call("log_artifact", lambda: self.client.log_artifact(self.run_id, path, artifact_path),
                   {"path": str(path), "artifact_path": artifact_path})

    def set_tag(self, key: str, value: str) -> None:
        self._call("set_tag", lambda: self.client.set_tag(self.run_id, key, value), {"tag": {key: value}})

    def finish(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", lambda: self.client.set_terminated(self.run_id, status=status),
                   {"status": status})
