"""ReLIFT baseline (method=relift): GRPO, with a separate SFT step on the hardest questions (TRAPO-SPEC.md).

The algorithm is `baselines.relift.algorithm` (buffer, loss, settings); it runs as step hooks (trapo/hooks.py) of
the TRAPO trainer's RL step on both engines:

- engine=local: the TRAPO trainer with `LocalRelift` (baselines/relift/local.py) after each RL step, its own AdamW;
- engine=openrlhf: the TRAPO RL launch (trapo/engines/openrlhf/launch.py) whose actor runs `ActorRelift`
  (baselines/relift/openrlhf.py): it collects the hardest prompts from each step's experiences (their reward and
  the reference solution in the label) and runs the SFT step with DeepSpeed's optimizer holding ReLIFT's own AdamW
  state for it (trapo/engines/openrlhf/optimizer_swap.py). The buffer and that state are saved with OpenRLHF's
  checkpoints.
"""

from __future__ import annotations

from baselines.common import RunContext, run_on_engine
from baselines.relift.algorithm import ReliftSettings
from baselines.relift.local import LocalRelift

LOCAL_HOOKS = (LocalRelift,)
ACTOR_HOOKS = ("baselines.relift.openrlhf:ActorRelift",)  # imported in the Ray actor (no OpenRLHF import here)


def check(cfg) -> None:
    if ReliftSettings.from_config(cfg) is None:
        raise ValueError("config method.relift: the relift runner needs the method's relift block "
                         "(conf/method/relift.yaml)")


def run(cfg, ctx: RunContext) -> dict[str, float]:
    check(cfg)
    return run_on_engine(cfg, ctx, "trapo.engines.openrlhf.launch", local_hooks=LOCAL_HOOKS, actor_hooks=ACTOR_HOOKS)


def final_model_dir(cfg, run_dir) -> str:
    from trapo.engines.openrlhf.launch import build_launch

    check(cfg)
    return build_launch(cfg, run_dir, actor_hooks=ACTOR_HOOKS).output_dir  # builds, and so validates, the launch
