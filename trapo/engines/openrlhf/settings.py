"""The resolved run config as the Ray workers see it.

The launcher puts the resolved Hydra config (JSON) in the environment of the Ray job; the vLLM engines
(rollout agent), the actors (loss) and the controller (MLflow) rebuild what they need from it with the
same functions as the local trainer (`trapo.guidance.rl_schedule`, `trapo.rl_step`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from trapo.engines.openrlhf import CONFIG_ENV

SUPPORTED_METHODS_NOTE = ("the RL launch has no SFT phase (method.sft_fraction > 0): method=sft and sft_rl run "
                          "through baselines/ (OpenRLHF's own SFT trainer, then this launch for sft_rl's RL steps)")


def to_container(cfg) -> dict:
    """A plain dict of a (possibly OmegaConf) config, interpolations resolved."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a core dependency
        pass
    return json.loads(json.dumps(cfg))


def as_config(data: Mapping[str, Any]):
    from omegaconf import OmegaConf

    return OmegaConf.create(dict(data))


def encode(cfg) -> str:
    return json.dumps(to_container(cfg), sort_keys=True, separators=(",", ":"))


def config_from_env(environ: Mapping[str, str] | None = None):
    environ = os.environ if environ is None else environ
    raw = environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(
            f"${CONFIG_ENV} is not set: start runs with `python experiments/run.py engine=openrlhf ...`, which puts "
            "the resolved config into the Ray job's environment"
        )
    return as_config(json.loads(raw))


def check_supported(cfg) -> None:
    """What OpenRLHF cannot run (after `trapo.config.validate_config`, which checks the rest)."""
    if float(cfg.method.sft_fraction) > 0:
        raise ValueError(f"config method.sft_fraction={cfg.method.sft_fraction}: {SUPPORTED_METHODS_NOTE}")
