"""Reproduce the paper's tables and figures with one command (docs/reproduce.md).

    python experiments/reproduce.py                                  # preset=mini, 3 seeds, results/mini/
    python experiments/reproduce.py preset=smoke output_dir=/tmp/r   # minutes on 2 cores
    python experiments/reproduce.py preset=paper dry_run=true        # the OpenRLHF launches and evaluations

Launches the runs each table needs (conf/reproduce.yaml: methods, ablation chain, alpha list, over `seeds`),
or reuses finished MLflow runs with the same resolved config (tag `config_hash`); then writes table_main,
table_ablation, table_alpha (csv, md, tex), the figures (png), manifest.json and README.md to `output_dir`,
and regenerates results/README.md when `output_dir` is under results/. Rerun it after an interruption:
finished runs are reused and an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def reproduce_keys(path: Path = ROOT / "conf" / "reproduce.yaml") -> tuple[str, ...]:
    """reproduce.py's own settings: the top-level keys conf/reproduce.yaml adds to the run config (one list)."""
    from omegaconf import OmegaConf

    return tuple(str(k) for k in OmegaConf.load(path) if k not in ("defaults", "hydra"))


REPRODUCE_KEYS = reproduce_keys()


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def settings(cfg: DictConfig, preset: str, task_overrides: list[str]) -> DictConfig:
    """The reproduce settings as a plain config; run-config overrides from the command line join `overrides`."""
    from omegaconf import OmegaConf

    run_cli = [o for o in task_overrides if override_key(o).split(".")[0] not in (*REPRODUCE_KEYS, "preset")]
    bad = [o for o in run_cli if override_key(o) in ("method", "seed")]
    if bad:
        raise SystemExit(f"{bad}: reproduce.py chooses methods and seeds itself; set `methods=[...]`, "
                         f"`ablation=[...]` or `seeds=[...]` instead")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    rcfg = OmegaConf.create({k: resolved[k] for k in REPRODUCE_KEYS})
    rcfg.preset = preset
    rcfg.overrides = [*run_cli, *rcfg.overrides]
    return rcfg


@hydra.main(config_path="../conf", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from experiments.report.pipeline import run

    hc = HydraConfig.get()
    task = list(hc.overrides.task)
    command = shlex.join(["python", "experiments/reproduce.py", *task])
    run(settings(cfg, str(hc.runtime.choices["preset"]), task), command)


if __name__ == "__main__":
    from experiments.report.plan import moved_key_error

    if (moved := moved_key_error(sys.argv[1:])) is not None:  # Hydra alone would say "Key 'guidance' is not in struct"
        sys.exit(f"error: {moved}")
    main()
