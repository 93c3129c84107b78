"""A comparison at a glance: one row per run, its method, what it changed, and its final metrics.

    python experiments/summary.py multirun/2026-12-06/21-04-10          # the jobs of a multirun folder
    python experiments/summary.py --experiment trapo                    # every run of an MLflow experiment
    python experiments/summary.py --experiment trapo --filter "tags.preset = 'smoke'" --csv table.csv

A multirun (`run.py -m ...`) prints this table when it ends and writes it to `<multirun folder>/summary.csv`.
Rows come from each job's folder (`final_metrics.json`, `mlflow_run.json`, `.hydra/overrides.yaml`) or from
MLflow (metrics, tags); the metric columns are the final ones, `score` first (eval/avg_accuracy, else
valid/accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trapo.tracking import differing_overrides, short_settings  # noqa: E402

ID_COLUMNS = ["method", "settings", "seed", "status", "score"]


def _score(metrics: dict) -> float | None:
    return metrics.get("eval/avg_accuracy", metrics.get("valid/accuracy"))


def _order(df: pd.DataFrame) -> pd.DataFrame:
    metric_cols = sorted(c for c in df.columns if "/" in c and c not in ID_COLUMNS)
    rest = [c for c in df.columns if c not in ID_COLUMNS and c not in metric_cols]
    return df[[c for c in ID_COLUMNS if c in df.columns] + metric_cols + rest]


def from_folder(folder: str | Path) -> pd.DataFrame:
    """One row per job folder below `folder` (a multirun folder, or any folder of run dirs)."""
    import yaml

    rows = []
    for overrides_file in sorted(Path(folder).glob("**/.hydra/overrides.yaml")):
        job = overrides_file.parent.parent
        overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])]
        cfg_file = overrides_file.parent / "config.yaml"
        cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
        values = {"method": (cfg.get("method") or {}).get("name"), "seed": cfg.get("seed"),
                  **dict(o.split("=", 1) for o in overrides if "=" in o)}
        final_file, run_file = job / "final_metrics.json", job / "mlflow_run.json"
        final = json.loads(final_file.read_text()) if final_file.exists() else {}
        run = json.loads(run_file.read_text()) if run_file.exists() else {}
        rows.append({"method": values.get("method", "trapo"),
                     "settings": " ".join(short_settings(differing_overrides(overrides))),
                     "seed": values.get("seed", ""), "status": "finished" if final else "not finished",
                     "score": _score(final), **final, "mlflow_run": run.get("run_id", "")[:8], "dir": str(job)})
    return _order(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=ID_COLUMNS)


def from_mlflow(experiment: str, filter_string: str = "", tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per run of an MLflow experiment (newest first), optionally filtered (MLflow's search syntax)."""
    from mlflow.tracking import MlflowClient

    from trapo.tracking import tracking_uri as default_uri

    client = MlflowClient(tracking_uri or default_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} in {tracking_uri or default_uri()}")
    rows = []
    for r in client.search_runs([exp.experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"]):
        tags, metrics = r.data.tags, r.data.metrics
        final = {k: v for k, v in metrics.items() if k.startswith(("eval/", "valid/"))}
        rows.append({"method": tags.get("method", ""), "settings": " ".join(short_settings(
                     tags.get("overrides", "").split())), "seed": tags.get("seed", ""),
                     "status": r.info.status.lower(), "score": metrics.get("score", _score(final)), **final,
                     "mlflow_run": r.info.run_id[:8], "run_name": r.info.run_name})
    return _order(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=ID_COLUMNS)


def render(df: pd.DataFrame) -> str:
    """A plain-text table: metrics to 3 decimals, long paths left out."""
    if df.empty:
        return "(no runs)"
    shown = df.drop(columns=[c for c in ("dir",) if c in df.columns])
    return shown.to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="-", justify="left",
                           formatters={c: f"{{:<{shown[c].astype(str).str.len().max()}}}".format
                                       for c in ("method", "settings") if c in shown.columns})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", help="a multirun folder (or any folder of run dirs)")
    ap.add_argument("--experiment", help="an MLflow experiment instead of a folder")
    ap.add_argument("--filter", default="", help="MLflow search filter, e.g. \"tags.method = 'trapo'\"")
    ap.add_argument("--csv", help="also write the table as CSV")
    a = ap.parse_args(argv)
    if bool(a.folder) == bool(a.experiment):
        ap.error("give a folder or --experiment (one of them)")
    if a.folder and not Path(a.folder).is_dir():
        ap.error(f"{a.folder}: no such folder")
    df = from_folder(a.folder) if a.folder else from_mlflow(a.experiment, a.filter)
    print(render(df))
    if a.csv:
        df.to_csv(a.csv, index=False)
        print(f"written: {a.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
