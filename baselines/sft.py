"""SFT baseline: full fine-tuning on the reference solutions, for every step (method=sft).

engine=local: the TRAPO trainer's SFT phase (method.sft_fraction = 1: `Trainer._sft_step` on every step).
engine=openrlhf: OpenRLHF's own SFT trainer (`openrlhf.cli.train_sft` under DeepSpeed, baselines/openrlhf_sft.py),
tracked in MLflow with the local engine's metric names; `engine.dry_run=true` prints the launch.
"""

from __future__ import annotations

from baselines.common import RunContext, run_on_engine


def check(cfg) -> None:
    if float(cfg.method.sft_fraction) != 1.0:
        raise ValueError(f"config method.sft_fraction: the sft runner trains SFT on every step (1.0), got "
                         f"{cfg.method.sft_fraction}; sft_rl is SFT followed by RL")


def run(cfg, ctx: RunContext) -> dict[str, float]:
    check(cfg)
    return run_on_engine(cfg, ctx, "baselines.openrlhf_sft")


def final_model_dir(cfg, run_dir) -> str:
    from baselines.openrlhf_sft import build_sft_launch

    check(cfg)
    return build_sft_launch(cfg, run_dir).output_dir  # builds, and so validates, the launch
