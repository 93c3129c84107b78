"""What finished runs left: their per-step history (metrics.jsonl, else MLflow's), final metrics, and the MLflow
store that finds a FINISHED run by its `config_hash` tag."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.report.plan import Job
from trapo.guidance import GuidanceSchedule
from trapo.rl_step import level_metric

log = logging.getLogger(__name__)

# per-step metrics the figures use (read from metrics.jsonl, or MLflow's history when the run dir is gone)
HISTORY_KEYS = ("train/reward_mean", "train/response_length", "train/entropy", "train/loss", "train/grad_norm",
                "train/expert_token_prob", "train/expert_low_prob_frac", "train/phase_rl",
                *(level_metric(i) for i in range(GuidanceSchedule().n_rounds)))


# ---- results ---------------------------------------------------------------------------------------
@dataclass
class RunResult:
    job: Job
    status: str  # trained | reused (MLflow run ...) | reused (run dir) | planned | missing (...)
    run_id: str | None = None
    run_dir: Path | None = None
    final: dict[str, float] = field(default_factory=dict)
    history: Any = None  # pandas DataFrame (step + HISTORY_KEYS) or None
    passk: dict | None = None  # evaluation.runner summary of the pass@k split
    seconds: float = 0.0


def read_history(run_dir: Path | None, client=None, run_id: str | None = None):
    import pandas as pd

    if run_dir is not None and (run_dir / "metrics.jsonl").exists():
        rows = []
        for line in (run_dir / "metrics.jsonl").read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        if rows:
            return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    if client is not None and run_id is not None:
        cols: dict[str, dict[int, float]] = {}
        for key in HISTORY_KEYS:
            try:
                hist = client.get_metric_history(run_id, key)
            except Exception:  # noqa: BLE001 - a missing metric or store error: no curve
                continue
            if hist:
                cols[key] = {int(m.step): float(m.value) for m in hist}
        if cols:
            steps = sorted({s for c in cols.values() for s in c})
            return pd.DataFrame({"step": steps, **{k: [c.get(s) for s in steps] for k, c in cols.items()}})
    return None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---- MLflow --------------------------------------------------------------------------------------
class Store:
    """The MLflow tracking store: find finished runs by config hash, add artifacts and tags to them."""

    def __init__(self, experiment: str):
        from mlflow.tracking import MlflowClient

        from trapo.tracking import check_reachable, relocate_artifacts, store_lock, tracking_uri

        self.uri = tracking_uri()
        check_reachable(self.uri)
        with store_lock(self.uri):  # first use creates the schema: one process at a time
            self.client = MlflowClient(self.uri)
            self.client.search_experiments(max_results=1)
            relocate_artifacts(self.uri)
        self.experiment = experiment

    def _exp_id(self) -> str | None:
        exp = self.client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp is not None else None

    def _latest(self, filter_string: str, ascending: bool = False):
        """The newest (`ascending`: the earliest) run of the experiment that matches `filter_string`, or None."""
        exp_id = self._exp_id()
        if exp_id is None:
            return None
        order = "ASC" if ascending else "DESC"
        runs = self.client.search_runs([exp_id], filter_string, order_by=[f"attributes.start_time {order}"], max_results=1)
        return runs[0] if runs else None

    def finished(self, config_hash: str):
        return self._latest(f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'")

    def finished_runs(self, method: str, seed: int) -> list:
        """Every FINISHED run of `method` and `seed` in the experiment, newest first."""
        exp_id = self._exp_id()
        if exp_id is None:
            return []
        return self.client.search_runs([exp_id], f"tags.method = '{method}' and tags.seed = '{int(seed)}' and "
                                       "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])

    def started_after(self, t0_ms: int, method: str):
        # the earliest: a job's top-level run (sft_rl on OpenRLHF starts its parent run before its two child runs)
        return self._latest(f"tags.method = '{method}' and attributes.start_time >= {int(t0_ms)}", ascending=True)

    def safe(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - artifacts are a convenience; the run dir has everything
            log.warning("MLflow %s failed (%s: %s)", what, type(e).__name__, e)


