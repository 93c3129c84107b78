"""A run directory's files, apart from the recipe: run.log's handlers, metrics.jsonl cut back to a checkpoint on
resume, earlier outputs set aside for resume=never, the resolved config and the pointer to the run's MLflow run.

    <run dir>/run.log  metrics.jsonl  final_metrics.json  checkpoints/  eval/  mlflow_run.json  .hydra/config.yaml
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("trapo.trainer")  # its messages read as the trainer's, as before the split


def set_aside_previous(output_dir: Path) -> None:
    """resume=never in a used run dir: move the earlier outputs to previous/<time>/ (nothing is deleted)."""
    names = ("checkpoints", "metrics.jsonl", "final_metrics.json", "eval", "mlflow_fallback.jsonl")
    present = [output_dir / n for n in names if (output_dir / n).exists()]
    if not present:
        return
    dest = output_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    while dest.exists():
        dest = dest.with_name(dest.name + "_")
    dest.mkdir(parents=True)
    for p in present:
        os.replace(p, dest / p.name)
    log.warning("resume=never: earlier outputs of %s moved to %s", output_dir, dest)


@contextmanager
def run_log(output_dir: Path, step_log: logging.Logger):
    """<run dir>/run.log gets the run's log (Hydra's job log when it already writes there) and `step_log`'s lines
    (one a step), which reach no other handler: the console shows the progress bar instead."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = (output_dir / "run.log").resolve()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, logging.FileHandler)
                    and Path(h.baseFilename).resolve() == path), None)
    own = handler is None
    if own:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(handler)
    saved = root.level, step_log.propagate, step_log.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    step_log.addHandler(handler)
    step_log.propagate, step_log.level = False, logging.INFO
    try:
        yield
    finally:
        step_log.removeHandler(handler)
        root.level, (step_log.propagate, step_log.level) = saved[0], saved[1:]
        if own:
            root.removeHandler(handler)
            handler.close()


def truncate_metrics(output_dir: Path, start: int) -> None:
    """metrics.jsonl keeps the steps up to the checkpoint; the steps after it are about to be redone."""
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("step", 0) <= start:
                keep.append(line + "\n")
        except (json.JSONDecodeError, AttributeError):  # a line cut by the kill
            pass
    path.write_text("".join(keep))


def resolved_config_file(output_dir: Path, yaml_text: str) -> Path:
    """.hydra/config.yaml: Hydra writes it for runs it starts; a run started from code gets it here."""
    path = output_dir / ".hydra" / "config.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml_text)
    return path


def write_mlflow_pointer(output_dir: Path, tracker, experiment: str) -> None:
    """mlflow_run.json: which MLflow run this directory belongs to (a multirun's summary table and
    experiments/summary.py read it)."""
    (output_dir / "mlflow_run.json").write_text(json.dumps(
        {"run_id": tracker.run_id, "run_name": tracker.run_name, "experiment": experiment,
         "tracking_uri": tracker.uri}, indent=2))
