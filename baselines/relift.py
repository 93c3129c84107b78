"""ReLIFT baseline (method=relift): GRPO, with a separate SFT step on the hardest questions (TRAPO-SPEC.md).

The algorithm is in trapo/relift.py (buffer, loss, second AdamW); the engines call it:
engine=local: the TRAPO trainer with its ReLIFT hook (`Trainer._rl_step` -> `LocalRelift.after_rl_step`).
engine=openrlhf: the TRAPO RL launch (trapo/engines/openrlhf/launch.py); the rollout agent is GRPO's, and the TRAPO
actor (`actor.TrapoActorPPOTrainer`) collects the hardest prompts from each step's experiences (their reward and
the reference solution in the label) and runs the SFT step with DeepSpeed's optimizer holding ReLIFT's own AdamW
state for it (trapo/engines/openrlhf/relift.py). The buffer and that state are saved with OpenRLHF's checkpoints.
"""

from __future__ import annotations

from baselines.common import RunContext, run_on_engine
from trapo.relift import ReliftSettings


def check(cfg) -> None:
    if ReliftSettings.from_config(cfg) is None:
        raise ValueError("config method.relift: the relift runner needs the method's relift block "
                         "(conf/method/relift.yaml)")


def run(cfg, ctx: RunContext) -> dict[str, float]:
    check(cfg)
    return run_on_engine(cfg, ctx, "trapo.engines.openrlhf.launch")


def final_model_dir(cfg, run_dir) -> str:
    from trapo.engines.openrlhf.launch import build_launch

    check(cfg)
    return build_launch(cfg, run_dir).output_dir  # builds, and so validates, the launch
