"""The config's derived and declared keys, and the reuse they must not break.

`train.group_size` is derived from the guidance schedule (`${trapo.group_size:}`, conf/config.yaml), not checked
against it; `engine.first_step` is declared in conf/engine/openrlhf.yaml. A run made before either change has the
same config hash as the run the same command composes now (experiments/report/plan.py), so reproduce reuses it."""

import os

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from experiments.report.plan import compose_run, config_hash, hash_view  # noqa: E402
from trapo.config import validate_config  # noqa: E402
from trapo.guidance import rl_schedule  # noqa: E402

METHODS = ("trapo", "grpo", "luffy", "relift", "sft", "sft_rl", "mg_prefix", "mg_sft", "mg_luffy")


@pytest.mark.parametrize("method", METHODS)
def test_group_size_is_the_guidance_schedules_total_for_every_method(method):
    cfg = compose_run(["preset=mini", f"method={method}"])
    assert cfg.train.group_size == 8  # the paper's micro-groups 4 + 2 + 1 + 1
    wider = compose_run(["preset=mini", f"method={method}", "method.guidance_schedule.group_sizes=[4,2,1,2]"])
    validate_config(wider)  # derived, so nothing to set beside it
    assert wider.train.group_size == 9 and rl_schedule(wider).group_size == 9


def test_an_unguided_method_may_set_its_own_group_size_a_guided_one_may_not():
    grpo = compose_run(["preset=mini", "method=grpo", "train.group_size=16"])
    validate_config(grpo)
    assert rl_schedule(grpo).group_sizes == (16,)
    with pytest.raises(ValueError, match=r"config method.guidance_schedule.group_sizes: \[4, 2, 1, 1\] sum to 8, but "
                                         r"train.group_size is 16"):
        validate_config(compose_run(["preset=mini", "method=trapo", "train.group_size=16"]))


def test_a_bad_schedule_fails_with_its_key_not_through_the_derived_group_size():
    cfg = compose_run(["preset=mini", "method=grpo", "method.guidance_schedule.group_sizes=[4,0,1,1]"])
    with pytest.raises(ValueError, match=r"^config method.guidance_schedule.group_sizes must be positive integers"):
        validate_config(cfg)


def test_a_saved_config_resolves_its_group_size_from_its_own_schedule(tmp_path):
    """A run dir keeps the unresolved config (.hydra/config.yaml); read back, it derives the same value."""
    cfg = compose_run(["preset=mini", "method=trapo", "method.guidance_schedule.group_sizes=[2,2,1,1]"])
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    assert "${trapo.group_size:}" in path.read_text()
    assert OmegaConf.load(path).train.group_size == 6


@pytest.mark.parametrize("preset", ("mini", "smoke", "smollm2"))
@pytest.mark.parametrize("method", ("trapo", "grpo", "sft_rl"))
def test_a_run_made_with_the_group_size_written_out_keeps_its_hash(preset, method):
    """Runs made before the derivation wrote `group_size: 8` (smollm2's preset still did): same hash, reused."""
    now = compose_run([f"preset={preset}", f"method={method}"])
    before = compose_run([f"preset={preset}", f"method={method}", "train.group_size=8"])
    assert config_hash(now) == config_hash(before)
    assert config_hash(now) != config_hash(compose_run([f"preset={preset}", f"method={method}",
                                                        "method.guidance_schedule.group_sizes=[4,2,1,2]"]))


def test_a_run_made_before_engine_first_step_was_declared_keeps_its_hash():
    now = compose_run(["preset=paper", "method=trapo", "engine=openrlhf"])
    assert now.engine.first_step == 0
    before = OmegaConf.to_container(now, resolve=True)
    del before["engine"]["first_step"]  # the run config as it was composed before the key was declared
    assert config_hash(before) == config_hash(now)
    assert "first_step" not in hash_view(now)["engine"]
    later = compose_run(["preset=paper", "method=trapo", "engine=openrlhf", "engine.first_step=250"])
    assert config_hash(later) != config_hash(now)  # a launch that starts later is another run


@pytest.mark.parametrize("extra", [[], ["method.guidance_schedule.thresholds=[0.3,0.6,0.9]"]])
def test_a_run_made_before_the_guidance_schedule_moved_under_the_method_keeps_its_hash(extra):
    """Runs were trained with the schedule at the top level (`guidance.*`); the same schedule under the method hashes
    as it did there, and a different schedule still hashes differently."""
    now = compose_run(["preset=mini", "method=trapo", *extra])
    before = OmegaConf.to_container(now, resolve=True)
    before["guidance"] = before["method"].pop("guidance_schedule")  # the config as it was composed before the move
    assert list(before) != list(OmegaConf.to_container(now))
    assert config_hash(before) == config_hash(now)
    assert "guidance_schedule" not in hash_view(now)["method"]
    assert (config_hash(now) == config_hash(compose_run(["preset=mini", "method=trapo"]))) == (extra == [])


def test_the_old_spelling_of_a_moved_key_says_where_it_went():
    import subprocess
    import sys

    from experiments.report.plan import ROOT, moved_key_error

    assert moved_key_error(["method=trapo", "method.guidance=adaptive"]) is None
    msg = moved_key_error(["preset=smoke", "guidance.thresholds=[0.3,0.6,0.9]"])
    assert msg.startswith("guidance.thresholds has moved to method.guidance_schedule.thresholds")
    assert msg.endswith("write method.guidance_schedule.thresholds=[0.3,0.6,0.9]")
    proc = subprocess.run([sys.executable, "experiments/run.py", "preset=smoke", "+guidance.preset=official_code"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: guidance.preset has moved to method.guidance_schedule.preset" in proc.stderr
    proc = subprocess.run([sys.executable, "experiments/reproduce.py", "preset=smoke", "dry_run=true",
                           "guidance.thresholds=[0.3,0.6,0.9]"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: guidance.thresholds has moved to method.guidance_schedule.thresholds" in proc.stderr


def test_every_run_of_results_mini_is_the_run_reproduce_plans_now():
    """`python experiments/reproduce.py` reuses results/mini's runs (by config hash) only while today's configs hash
    as the ones they were trained under: every (row, seed) of results/mini/runs.csv is planned under its hash."""
    import csv

    from hydra import compose

    from experiments.report.plan import ROOT, build_jobs, hydra_context, plan_specs
    from experiments.reproduce import settings

    with hydra_context():
        rcfg = settings(compose(config_name="reproduce", overrides=["preset=mini"]), "mini", [])
    _, index = build_jobs(rcfg, plan_specs(rcfg))
    rows = list(csv.DictReader((ROOT / "results" / "mini" / "runs.csv").open()))
    assert len(rows) == len(index)
    moved = [(r["label"], r["seed"]) for r in rows if index[(r["label"], int(r["seed"]))].hash != r["config_hash"]]
    assert moved == [], f"these results/mini runs would be trained again: {moved}"
