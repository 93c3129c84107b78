"""The OpenRLHF driver for TRAPO: `python -m trapo.engines.openrlhf.entry <OpenRLHF flags>`.

Started by `launch.py` (through `ray job submit` or directly), with the resolved TRAPO config in
$TRAPO_OPENRLHF_CONFIG. It checks that the installed OpenRLHF is the one the hooks were written for,
then runs OpenRLHF's own `train_ppo_ray` command line (parser, checks, `train`) with TRAPO's actor loss
and MLflow logger in place (see `patches.py`).
"""

from __future__ import annotations

import json
import os
import sys

from trapo.engines.openrlhf import ACTOR_HOOKS_ENV, CONFIG_ENV


def main(argv: list[str] | None = None) -> None:
    from trapo.guidance import rl_schedule
    from trapo.engines.openrlhf import patches
    from trapo.engines.openrlhf.settings import config_from_env

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = config_from_env()
    rl_schedule(cfg)  # fails early on a bad guidance config
    patches.require_targets()
    env = {CONFIG_ENV: os.environ[CONFIG_ENV]}
    if os.environ.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
    cfg_data = json.loads(os.environ[CONFIG_ENV])
    hooks = [h for h in os.environ.get(ACTOR_HOOKS_ENV, "").split(",") if h]  # the runner's actor step hooks
    patches.run_cli_block(argv, lambda args: patches.train_with_trapo(args, cfg_data, env, actor_hooks=hooks))


if __name__ == "__main__":
    main()
