"""What a runner gets from experiments/run.py, and the local engine's path (the TRAPO trainer) shared by all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence


@dataclass
class RunContext:
    output_dir: Path  # the Hydra run dir
    overrides: list[str] = field(default_factory=list)  # the command line's, for the MLflow run name and tags
    callbacks: list[Callable] = field(default_factory=list)  # Optuna trial reporting (sweeps)
    command: str | None = None
    resume_hint: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str = "experiments/run.py"


def train_local(cfg, ctx: RunContext, hooks: Sequence[type] = ()) -> dict[str, float]:
    """The run on the local engine: the TRAPO trainer runs every phase of the method (SFT, RL), with the runner's
    step hooks (trapo/hooks.py) after its RL steps."""
    from trapo.trainer import Trainer

    return Trainer(cfg, ctx.output_dir, callbacks=ctx.callbacks, tags=ctx.tags, overrides=ctx.overrides,
                   source=ctx.source, command=ctx.command, resume_hint=ctx.resume_hint, hooks=hooks).run()


def engine_name(cfg) -> str:
    name = str(cfg.engine.name)
    if name not in ("local", "openrlhf"):
        raise ValueError(f"config engine.name must be local or openrlhf, got {name!r}")
    return name


def run_on_engine(cfg, ctx: RunContext, openrlhf_module: str, local_hooks: Sequence[type] = (),
                  **openrlhf_kwargs) -> dict[str, float]:
    """engine=local: the TRAPO trainer with `local_hooks`; engine=openrlhf: `openrlhf_module.main(cfg, run_dir,
    **openrlhf_kwargs)` (the dry run or the launch, e.g. with the RL launch's `actor_hooks`; its metrics reach MLflow
    from the cluster, so nothing is returned here)."""
    if engine_name(cfg) == "local":
        return train_local(cfg, ctx, hooks=local_hooks)
    import importlib

    importlib.import_module(openrlhf_module).main(cfg, ctx.output_dir, **openrlhf_kwargs)
    return {}
