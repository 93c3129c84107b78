"""Baseline runners beside the TRAPO trainer: SFT, SFT-then-RL and ReLIFT, on `engine=local` and `engine=openrlhf`.

A method whose config names a `runner` (conf/method/sft.yaml, sft_rl.yaml, relift.yaml) is trained by
`baselines.<runner>.run(cfg, ctx)`; every other method (trapo, grpo, luffy, the ablations) is a method config of the
TRAPO trainer (`trapo.trainer.Trainer`, or its OpenRLHF launch). `experiments/run.py` dispatches.

    sft     local: the trainer's SFT phase (method.sft_fraction 1)  openrlhf: OpenRLHF's own SFT trainer
            (`openrlhf.cli.train_sft` under DeepSpeed, baselines/openrlhf_sft.py), tracked in MLflow
    sft_rl  local: SFT then GRPO from its weights in one run        openrlhf: that SFT launch, then the RL launch
            from its output directory, one MLflow parent run with the two as children
    relift  local: the trainer with ReLIFT's step hook             openrlhf: the RL launch; the TRAPO actor runs
            (baselines/relift/local.py)                            ReLIFT's actor hook, the SFT step on the
                                                                   hardest questions (baselines/relift/openrlhf.py)

A runner's step hooks (trapo/hooks.py) are how a method adds work around the RL step on either engine: the
trainer and the actor run what they are handed and name no baseline. `hooks_for(cfg)` gives a method's local hooks.

Dependency direction: evaluation <- trapo <- baselines <- experiments (trapo never imports this package).
"""

from __future__ import annotations

import importlib

from baselines.common import RunContext

RUNNERS = ("sft", "sft_rl", "relift")

__all__ = ["RUNNERS", "RunContext", "hooks_for", "runner_for", "run"]


def runner_for(cfg):
    """The runner module of the config's method, or None when the TRAPO trainer runs it."""
    name = cfg.method.get("runner")
    if not name:
        return None
    if name not in RUNNERS:
        raise ValueError(f"config method.runner: unknown runner {name!r}; one of {', '.join(RUNNERS)}")
    return importlib.import_module(f"baselines.{name}")


def hooks_for(cfg) -> tuple:
    """The local trainer's step hooks of the config's method (its runner's `LOCAL_HOOKS`; none for most)."""
    runner = runner_for(cfg)
    return tuple(getattr(runner, "LOCAL_HOOKS", ())) if runner is not None else ()


def run(cfg, ctx: RunContext) -> dict[str, float]:
    runner = runner_for(cfg)
    if runner is None:
        raise ValueError(f"method {cfg.method.name} has no runner: it is trained by the TRAPO trainer")
    return runner.run(cfg, ctx)


def final_model_dir(cfg, run_dir) -> str:
    """Where the trained model of a run lands (a Hugging Face model directory), for evaluation afterwards."""
    from pathlib import Path

    run_dir = Path(run_dir)
    if cfg.engine.name != "openrlhf":
        return str(run_dir / "checkpoints" / f"step_{int(cfg.train.steps):06d}")
    runner = runner_for(cfg)
    if runner is not None and hasattr(runner, "final_model_dir"):
        return runner.final_model_dir(cfg, run_dir)
    from trapo.engines.openrlhf.launch import build_launch

    return build_launch(cfg, run_dir).output_dir  # builds, and so validates, the launch
