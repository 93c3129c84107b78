"""TRAPO: Trust-Region Adaptive Policy Optimization, as pure PyTorch functions.

The algorithm, in reading order:
  losses      TrSFT, SFT, LUFFY shaping, Dr.GRPO policy gradient, entropy; `policy_loss`, the whole objective
  advantages  group advantages (Dr.GRPO: r - mean, no std)
  prefix      expert-prefix cutting (snap to the next paragraph break)
  guidance    micro-group adaptive guidance schedule
  rollout     micro-group rounds with adaptive prefixes, engine-agnostic
  rewards     reward interface (final-answer correctness)
  rl_step     one step for every engine: rollouts -> advantages -> one update, the SFT step, the step's metrics
  config      checks on a run config, and the schedules derived from it
  trainer     the local recipe: phases, batches, checkpoints and resume, MLflow, evaluation
  engines/    `local` (one process) and `openrlhf` (Ray + DeepSpeed + vLLM), which only move data

trapo/ imports `evaluation/` (the grader, prompt formatting) and nothing of `baselines/` or `experiments/`.
"""

__version__ = "0.1.0"


def _group_size(*, _root_) -> int:
    """`${trapo.group_size:}` in conf/config.yaml: the guidance schedule's total, for every method."""
    from trapo.guidance import guidance_schedule

    return guidance_schedule(_root_).group_size


def _register_resolvers() -> None:
    # at import, so that any process that reads a run config through trapo (the trainer, the OpenRLHF actors,
    # the report's hashes, a run dir's saved .hydra/config.yaml) resolves it the same way
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("trapo.group_size"):
        OmegaConf.register_new_resolver("trapo.group_size", _group_size)


_register_resolvers()
