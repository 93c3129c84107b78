"""Hydra callbacks (conf/config.yaml `hydra.callbacks`, instantiated by the experiments/ scripts): a multirun says
where its outputs go."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("trapo")


class OutputDirs(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        log.info("outputs: %s/ (one folder per job)", Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config, **kwargs) -> None:
        log.info("all outputs in %s/", Path(str(config.hydra.sweep.dir)))
