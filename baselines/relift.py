"""ReLIFT baseline (method=relift): GRPO, with a separate SFT step on the hardest questions (TRAPO-SPEC.md).

The algorithm is in trapo/relift.py (buffer, loss, second AdamW); the engines call it:
engine=local: the TRAPO trainer with its ReLIFT hook (`Trainer._rl_step` -> `LocalRelift.after_rl_step`).
engine=openrlhf: the TRAPO RL launch (trapo/engines/openrlhf/launch.py); the rollout agent is GRPO's, and the TRAPO
actor (`actor.TrapoActorPPOTrainer`) collects the hardest prompts from each step's experiences (their reward and
the reference solution in the label) and runs the SFT step with DeepSpeed's optimizer holding ReLIFT's own AdamW
state for it (trapo/engines/openrlhf/relift.py). The buffer and that state are saved with OpenRLHF's checkpoints.
"""

from __future__ import annotations


from baselines.common import RunContext, engine_name, train_local
from trapo.relift import ReliftSettings


def check(cfg) -> None:
    if ReliftSettings.from_config(cfg) is None:
        raise ValueError("config method.relift: the relift runner needs the method's relift block "
                         "(conf/method/relift.yaml)")


def run(cfg, ctx: RunContext) -> dict[str, float]:
    check(cfg)
    if engine_name(cfg) == "local":
        return train_local(cfg, ctx)
    from trapo.engines.openrlhf.launch import main

    main(cfg, ctx.output_dir)
    return {}


def final_model_dir(cfg, run_dir) -> str:
    from trapo.engines.openrlhf.launch import build_launch

    check(cfg)
    launch = build_launch(cfg, run_dir)  # validates the config for OpenRLHF
    return next(str(f.value) for f in launch.flags if f.flag == "--ckpt.output_dir")
