"""baselines/: which runner trains which method and the runners' checks (the layering evaluation <- trapo <-
baselines <- experiments is tests/unit/test_architecture.py's)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import baselines
from baselines import sft, sft_rl
from baselines import relift as relift_runner

ROOT = Path(__file__).resolve().parents[2]


def cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("method, runner", [("sft", sft), ("sft_rl", sft_rl), ("relift", relift_runner),
                                            ("trapo", None), ("grpo", None), ("luffy", None), ("mg_prefix", None),
                                            ("mg_sft", None), ("mg_luffy", None)])
def test_methods_go_to_their_runner(method, runner):
    assert baselines.runner_for(cfg(f"method={method}")) is runner
    assert baselines.runner_for(cfg(f"method={method}", "preset=paper")) is runner  # both engines, one runner


def test_unknown_runner_and_wrong_phases_are_refused():
    with pytest.raises(ValueError, match="unknown runner"):
        baselines.runner_for(cfg("method=grpo", "+method.runner=nope"))
    with pytest.raises(ValueError, match="sft_fraction"):
        sft.check(cfg("method=sft", "method.sft_fraction=0.5"))
    with pytest.raises(ValueError, match="sft_rl needs both"):
        sft_rl.split_steps(cfg("method=sft_rl", "method.sft_fraction=1.0"))
    with pytest.raises(ValueError, match="relift"):
        relift_runner.check(cfg("method=grpo", "+method.runner=relift"))


def test_sft_rl_phases_are_the_trainers():
    assert sft_rl.split_steps(cfg("method=sft_rl", "preset=paper")) == (250, 250)
    assert sft_rl.split_steps(cfg("method=sft_rl", "preset=smoke")) == (2, 2)
    assert sft_rl.split_steps(cfg("method=sft_rl", "train.steps=5")) == (2, 3)  # round(0.5 x 5) = 2, as the trainer


def test_final_model_dir(tmp_path):
    assert baselines.final_model_dir(cfg("method=relift", "preset=smoke"), tmp_path) == \
        str(tmp_path / "checkpoints" / "step_000004")  # local: the trainer's final checkpoint
    assert baselines.final_model_dir(cfg("method=sft", "preset=paper"), tmp_path) == \
        str(tmp_path.resolve() / "openrlhf" / "final")
    assert baselines.final_model_dir(cfg("method=sft_rl", "preset=paper"), tmp_path) == \
        str(tmp_path.resolve() / "openrlhf" / "final")  # the RL phase's, not the SFT phase's (openrlhf/sft/final)
    assert baselines.final_model_dir(cfg("method=grpo", "preset=paper"), tmp_path) == \
        str(tmp_path.resolve() / "openrlhf" / "final")


def test_a_method_block_no_hook_reads_is_refused(tmp_path):
    """method=relift's block is read by ReLIFT's step hooks only: the trainer or the OpenRLHF launch without them
    refuses the run (before: the trainer built ReLIFT itself; a trainer that ignored the block would train GRPO)."""
    from baselines import hooks_for
    from baselines.relift import ACTOR_HOOKS
    from trapo.engines.openrlhf.launch import build_launch
    from trapo.trainer import Trainer

    c = cfg("method=relift", "preset=smoke")
    with pytest.raises(ValueError, match="method.relift .*no hook of this run reads it"):
        Trainer(c, tmp_path / "local")
    assert [h.__name__ for h in Trainer(c, tmp_path / "local", hooks=hooks_for(c)).hook_classes] == ["LocalRelift"]
    o = cfg("method=relift", "preset=smoke", "engine=openrlhf")
    with pytest.raises(ValueError, match="method.relift .*no hook of this run reads it"):
        build_launch(o, tmp_path / "orl")
    assert build_launch(o, tmp_path / "orl", actor_hooks=ACTOR_HOOKS).env["TRAPO_OPENRLHF_ACTOR_HOOKS"] == ACTOR_HOOKS[0]
    assert hooks_for(cfg("method=grpo", "preset=smoke")) == ()
