"""TRAPO on OpenRLHF 0.11.x (Ray actors, DeepSpeed ZeRO training, vLLM rollouts).

OpenRLHF is extended, not forked: each module here adapts data between OpenRLHF and `trapo/`, whose
functions hold the algorithm.

- `launch`: the Hydra config -> the OpenRLHF command line / Ray job (and the dry run);
- `entry`: the driver (`python -m trapo.engines.openrlhf.entry <OpenRLHF flags>`);
- `agent`: the rollout (`--train.agent_func_path`): micro-group rounds with expert prefixes (`trapo.rollout`);
- `actor`: the actor update (`trapo.losses.policy_loss`, RL on generated tokens + TrSFT on prefix tokens) and its
  step hooks (trapo/hooks.py);
- `optimizer_swap`: a second AdamW state inside DeepSpeed's one optimizer (a hook's own optimizer step);
- `mlflow_logger`: the local engine's metric names, logged to MLflow in OpenRLHF's tensorboard slot;
- `patches`: the few places where OpenRLHF has no hook, pinned to the version they were written for.

Nothing here imports OpenRLHF at import time of `trapo`; only `agent`, `actor`, `entry` and `patches`
need it installed (`pip install -e .[openrlhf]`, or `scripts/install_openrlhf.sh` on CPU).
"""

OPENRLHF_VERSION = "0.11.2"  # the version the hooks in this package were written and tested against
CONFIG_ENV = "TRAPO_OPENRLHF_CONFIG"  # JSON of the resolved run config, for the Ray workers
ACTOR_HOOKS_ENV = "TRAPO_OPENRLHF_ACTOR_HOOKS"  # the actor's step hooks, "module:Class" comma-separated (a runner's)
