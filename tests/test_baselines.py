"""baselines/: which runner trains which method, the runners' checks, and the dependency direction
evaluation <- trapo <- baselines <- experiments (trapo never imports baselines)."""

import ast
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import baselines
from baselines import sft, sft_rl
from baselines import relift as relift_runner

ROOT = Path(__file__).resolve().parents[1]


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


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_trapo_does_not_import_baselines():
    # trapo/report/ is the reproduce report, which issue 14 moves to experiments/report/ (it names the runners)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "trapo").rglob("*.py")
                 if "report" not in p.relative_to(ROOT / "trapo").parts and "baselines" in _imports(p)]
    assert offenders == []
    assert not any("experiments" in _imports(p) for p in (ROOT / "baselines").rglob("*.py"))
