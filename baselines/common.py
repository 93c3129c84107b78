"""What a runner gets from experiments/run.py, and the local engine's path (the TRAPO trainer) shared by all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping


@dataclass
class RunContext:
    output_dir: Path  # the Hydra run dir
    overrides: list[str] = field(default_factory=list)  # the command line's, for the MLflow run name and tags
    callbacks: list[Callable] = field(default_factory=list)  # Optuna trial reporting (sweeps)
    command: str | None = None
    resume_hint: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str = "experiments/run.py"


def train_local(cfg, ctx: RunContext) -> dict[str, float]:
    """The run on the local engine: the TRAPO trainer runs every phase of the method (SFT, RL, ReLIFT's hook)."""
    from trapo.trainer import Trainer

    return Trainer(cfg, ctx.output_dir, callbacks=ctx.callbacks, tags=ctx.tags, overrides=ctx.overrides,
                   source=ctx.source, command=ctx.command, resume_hint=ctx.resume_hint).run()


def engine_name(cfg) -> str:
    name = str(cfg.engine.name)
    if name not in ("local", "openrlhf"):
        raise ValueError(f"config engine.name must be local or openrlhf, got {name!r}")
    return name


def run_on_engine(cfg, ctx: RunContext, openrlhf_module: str) -> dict[str, float]:
    """engine=local: the TRAPO trainer; engine=openrlhf: `openrlhf_module.main(cfg, run_dir)` (the dry run or the
    launch; its metrics reach MLflow from the cluster, so nothing is returned here)."""
    if engine_name(cfg) == "local":
        return train_local(cfg, ctx)
    import importlib

    importlib.import_module(openrlhf_module).main(cfg, ctx.output_dir)
    return {}
