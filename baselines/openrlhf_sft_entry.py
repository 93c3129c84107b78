"""The SFT driver on OpenRLHF: `deepspeed --module baselines.openrlhf_sft_entry <train_sft flags>`.

Started by baselines/openrlhf_sft.py with the resolved run config in $TRAPO_OPENRLHF_CONFIG. Each DeepSpeed rank
checks that the installed OpenRLHF is the one this was written for (`SFT_TARGETS`), then runs OpenRLHF's own
`train_sft` command line with, in this process only (no Ray here: rebinding the module globals works):

- `SFTTrainer` -> a subclass whose tensorboard slot, on rank 0, is `MlflowScalars`: the step's logs under the local
  engine's SFT metric names (train/loss, train/lr, train/grad_norm, train/phase_rl = 0), the rest under openrlhf/;
- `get_strategy` -> the same strategy, whose `setup_dataloader` reads the training file in its own order (the
  launcher wrote it in the local trainer's step order; OpenRLHF would shuffle it).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Mapping

from trapo.engines.openrlhf import CONFIG_ENV

# OpenRLHF's SFT log keys -> the local engine's metric names (trapo.trainer.Trainer._sft_step)
METRIC_NAMES = {"loss_mean": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm"}


def sft_metrics(logs: Mapping[str, Any]) -> dict[str, float]:
    """One SFT step's `train/<key>` scalars (as SFTTrainer writes them) under the local engine's names."""
    out: dict[str, float] = {}
    for tag, v in logs.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(float(v)):
            continue
        key = tag.split("/", 1)[1] if tag.startswith("train/") else tag
        out[METRIC_NAMES.get(key, f"openrlhf/{key}")] = float(v)
    if out:
        out["train/phase_rl"] = 0.0
    return out


class MlflowScalars:
    """The `SummaryWriter` interface SFTTrainer uses (`add_scalar`, `close`), writing one MLflow batch per step."""

    def __init__(self, cfg, tracker=None):
        from trapo.engines.openrlhf.settings import to_container
        from trapo.tracking import Tracker, flatten

        t = cfg.tracking
        self.tracker = tracker or Tracker(
            str(t.experiment), run_name=str(cfg.tracking.get("run_name") or cfg.method.name),
            tags={"method": str(cfg.method.name), "engine": "openrlhf", "phase": "sft",
                  "seed": str(cfg.seed), "preset": str(cfg.get("preset_name", ""))},
            parent_run_id=t.get("parent_run_id"))
        self.tracker.log_params(flatten(to_container(cfg)))
        self._step: int | None = None
        self._pending: dict[str, float] = {}

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    def _flush(self) -> None:
        if self._step is not None and self._pending:
            train = {k: v for k, v in self._pending.items() if k.startswith("train/")}
            other = {k: v for k, v in self._pending.items() if not k.startswith("train/")}
            metrics = sft_metrics(train)
            metrics.update({k: float(v) for k, v in other.items()})
            if metrics:
                self.tracker.log_metrics(metrics, step=self._step)
        self._pending = {}

    def add_scalar(self, tag: str, value, global_step: int) -> None:
        if self._step is not None and int(global_step) != self._step:
            self._flush()
        self._step = int(global_step)
        self._pending[tag] = float(value)

    def close(self) -> None:
        self._flush()
        self.tracker.finish("FINISHED")


def in_file_order(strategy) -> None:
    """The strategy's dataloaders without shuffling: DistributedSampler(shuffle=False) gives each optimizer step
    the next train.batch_size rows of the file, i.e. the local trainer's step (see openrlhf_sft.write_sft_data)."""
    setup = strategy.setup_dataloader

    def setup_dataloader(dataset, batch_size, pin_memory=False, shuffle=True, *args, **kwargs):
        return setup(dataset, batch_size, pin_memory, False, *args, **kwargs)

    strategy.setup_dataloader = setup_dataloader


def train_with_mlflow(args, cfg) -> None:
    """OpenRLHF's `train_sft.train(args)` with the MLflow logger and the file-order loader (this process only)."""
    from trapo.engines.openrlhf import patches
    from trapo.engines.openrlhf.mlflow_logger import job_output_dir, store_run_id

    cpu = patches.cpu_route(cfg)
    if cpu:  # before OpenRLHF's imports, which need flash-attention's and vLLM's names
        patches.cpu_route_sft_process(args)
    import openrlhf.cli.train_sft as cli
    from openrlhf.trainer.sft_trainer import SFTTrainer

    class TrapoSFTTrainer(SFTTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            if self.strategy.is_rank_0() and self._wandb is None:
                self._tensorboard = MlflowScalars(cfg)
                # the run the launcher's evaluation logs to afterwards (engine.rollout=cpu), as the RL job's
                store_run_id(job_output_dir(self.strategy.args), self._tensorboard.run_id)

    base_strategy = cli.get_strategy

    def get_strategy(a):
        strategy = base_strategy(a)
        in_file_order(strategy)
        if cpu:  # gloo, a CPU mesh, fp32 (patches.cpu_route_sft_process)
            strategy.__class__ = patches.cpu_strategy_class()
        return strategy

    cli.SFTTrainer = TrapoSFTTrainer
    cli.get_strategy = get_strategy
    cli.train(args)


def main(argv: list[str] | None = None) -> None:
    from baselines.openrlhf_sft import check_sft_targets, run_sft_cli_block
    from trapo.engines.openrlhf.patches import ALLOW_DRIFT_ENV
    from trapo.engines.openrlhf.settings import as_config, config_from_env

    argv = list(sys.argv[1:] if argv is None else argv)
    config_from_env()  # fails early without the launcher's config
    problems = check_sft_targets()
    if problems and os.environ.get(ALLOW_DRIFT_ENV) != "1":
        raise RuntimeError("OpenRLHF does not match what the SFT baseline was written for:\n  "
                           + "\n  ".join(problems) + f"\n(set {ALLOW_DRIFT_ENV}=1 to run anyway)")
    cfg = as_config(json.loads(os.environ[CONFIG_ENV]))
    run_sft_cli_block(argv, lambda args: train_with_mlflow(args, cfg))


if __name__ == "__main__":
    main()
