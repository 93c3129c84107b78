"""Hydra callbacks (conf/config.yaml `hydra.callbacks`, instantiated by the experiments/ scripts): a multirun says
where its outputs go, and ends with a table of its jobs (`summary.csv` in its folder)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("trapo")


class OutputDirs(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        log.info("outputs: %s/ (one folder per job)", Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config, **kwargs) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        log.info("all outputs in %s/", folder)
        try:  # a comparison at a glance: one row per job (experiments/summary.py tabulates any runs later)
            from experiments.summary import from_folder, render

            table = from_folder(folder)
            if not table.empty:
                table.to_csv(folder / "summary.csv", index=False)
                log.info("summary (%s):\n%s", folder / "summary.csv", render(table))
        except Exception as exc:  # noqa: BLE001 - a summary never fails the jobs that already ran
            log.warning("no summary table: %s: %s", type(exc).__name__, exc)
