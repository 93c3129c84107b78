"""Train one method (or, with -m, several) and log it to MLflow.

    python experiments/run.py                                   # TRAPO on the embedded default
    python experiments/run.py -m method=trapo,grpo,sft_rl       # a comparison
    python experiments/run.py -m method=trapo,grpo preset=smoke # seconds, for tests
    python experiments/run.py -m method=trapo sweep=trust_region # Optuna sweep (docs/sweeps.md)
    python experiments/run.py preset=paper method=sft engine.dry_run=true   # an OpenRLHF launch, printed

Methods whose config names a `runner` (sft, sft_rl, relift) go through baselines/; the others (trapo, grpo, luffy,
the ablations) through the TRAPO trainer (trapo/trainer.py), or its OpenRLHF launch with engine=openrlhf.
"""

from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# printed by `import torch` on every run where the pynvml package is installed (OpenRLHF's dependencies)
warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)


def rerun_command(hc) -> str:
    """This command, with the run (or sweep) dir pinned so that it resumes instead of starting a new dir."""
    from hydra.types import RunMode

    argv = list(sys.argv[1:])
    multirun = hc.mode == RunMode.MULTIRUN
    key, value = ("hydra.sweep.dir", hc.sweep.dir) if multirun else ("hydra.run.dir", hc.runtime.output_dir)
    if not any(a.split("=", 1)[0] == key for a in argv):
        argv.append(f"{key}={value}")
    return shlex.join(["python", "experiments/run.py", *argv])


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from baselines import RunContext, runner_for

    hc = HydraConfig.get()
    runner = runner_for(cfg)  # sft, sft_rl, relift: baselines/ (each on both engines)
    if runner is None and cfg.engine.name == "openrlhf":  # Ray + DeepSpeed + vLLM (engine.dry_run=true prints the launch)
        from trapo.engines.openrlhf.launch import main as launch_openrlhf

        return launch_openrlhf(cfg, hc.runtime.output_dir)

    from hydra_plugins.trapo_optuna_sweeper import trial_callbacks

    out_dir = hc.runtime.output_dir
    overrides = list(hc.overrides.task)
    # in an Optuna sweep (sweep=...), report valid/accuracy to the trial at every eval.every and stop when pruned
    ctx = RunContext(output_dir=out_dir, overrides=overrides, callbacks=trial_callbacks(cfg),
                     command=shlex.join(["python", "experiments/run.py", *overrides]),
                     resume_hint=f"to resume: {rerun_command(hc)}")
    if runner is not None:
        final = runner.run(cfg, ctx)
    else:  # trapo, grpo, luffy and the ablations: method configs of the TRAPO trainer
        from baselines.common import train_local

        final = train_local(cfg, ctx)
    if final:
        print(" ".join(f"{k}={v:.3f}" for k, v in final.items()))
    return final.get("valid/accuracy", final.get("eval/avg_accuracy", 0.0))


if __name__ == "__main__":
    from experiments.report.plan import moved_key_error
    from trapo.trainer import Preempted

    if (moved := moved_key_error(sys.argv[1:])) is not None:  # Hydra alone would say "Key 'guidance' is not in struct"
        sys.exit(f"error: {moved}")

    try:
        main()
    except Preempted:  # SIGTERM: the trainer has said where it stopped and how to resume
        sys.exit(143)
    except KeyboardInterrupt:  # Ctrl-C: likewise
        sys.exit(130)
