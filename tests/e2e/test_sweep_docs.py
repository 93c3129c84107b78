"""The sweep commands docs/sweeps.md shows can prune as written: the job validates (eval.every) before its last
step and the median pruner's warm-up and start-up trials leave room for a decision. Composes only, no training."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]


def documented_sweeps():
    text = (ROOT / "docs" / "sweeps.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    cmds = [line.split("#")[0].strip() for b in blocks for line in b.splitlines()]
    return [c for c in cmds if c.startswith("python experiments/run.py -m") and "sweep=" in c]


def test_the_docs_show_a_smoke_sweep():
    assert any("preset=smoke" in c for c in documented_sweeps())


@pytest.mark.parametrize("command", documented_sweeps())
def test_documented_sweep_can_prune(command):
    overrides = [a for a in shlex.split(command)[3:] if "${" not in a]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    steps, every, sw = int(cfg.train.steps), int(cfg.eval.every), cfg.hydra.sweeper
    assert 0 < every < steps, f"eval.every={every} with train.steps={steps}: the pruner never sees a value"
    assert sw.pruner.type == "median"
    assert int(sw.pruner.n_warmup_steps) < steps - every + 1, "the pruner's warm-up outlasts the validations"
    assert int(sw.pruner.n_startup_trials) < int(sw.n_trials), "every trial is a start-up trial: nothing is pruned"
