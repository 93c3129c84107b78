"""What would break a real cluster run, checked on CPU against the installed Ray and OpenRLHF code:
the driver's runtime env merges with the `ray job submit` one (Ray's own merge function), and OpenRLHF's prompt
loader hands out the prompt file in the local engine's step order."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from openrlhf_support import compose, openrlhf_modules, require_openrlhf

require_openrlhf()
pytestmark = pytest.mark.openrlhf

patches, launch_mod = openrlhf_modules("trapo.engines.openrlhf.patches", "trapo.engines.openrlhf.launch")
from trapo.engines.openrlhf import CONFIG_ENV  # noqa: E402


# ---- `ray job submit`: the job's runtime env and the driver's ray.init ---------------------------------
def _job_environ(launch) -> dict:
    """The driver's environment as Ray's job supervisor sets it for `ray job submit --runtime-env-json ...`
    (ray/dashboard/modules/job/job_supervisor.py: RAY_JOB_CONFIG_JSON_ENV_VAR, plus the env vars themselves)."""
    job_env = {**launch.runtime_env(), "working_dir": str(launch.working_dir)}
    return {**launch.env, patches.JOB_CONFIG_ENV: json.dumps({"runtime_env": job_env, "metadata": {}})}


def _ray_merge(environ: dict, driver_env: dict | None):
    """What ray.init does with a driver runtime env inside a job (ray/_private/worker.py, ~1762-1786)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
    from ray.job_config import JobConfig
    from ray.runtime_env.runtime_env import _merge_runtime_env

    assert patches.JOB_CONFIG_ENV == RAY_JOB_CONFIG_JSON_ENV_VAR
    injected = JobConfig.from_json(json.loads(environ[RAY_JOB_CONFIG_JSON_ENV_VAR]))
    return _merge_runtime_env(injected.runtime_env, driver_env, override=False)


def test_driver_runtime_env_merges_with_the_ray_job_one(tmp_path):
    cfg = compose("engine=openrlhf", "preset=smoke", "engine.launcher=ray_job")
    launch = launch_mod.build_launch(cfg, tmp_path)
    environ = _job_environ(launch)
    driver = patches.driver_runtime_env(launch.env, environ)
    merged = _ray_merge(environ, driver)
    assert merged is not None, "Ray refuses to merge the job's and the driver's runtime env"
    env_vars = merged["env_vars"]
    assert env_vars[CONFIG_ENV] == launch.env[CONFIG_ENV]
    assert env_vars["MLFLOW_TRACKING_URI"] == launch.env["MLFLOW_TRACKING_URI"]
    for k, v in patches.RAY_ENV_DEFAULTS.items():  # OpenRLHF's defaults still reach the workers
        assert env_vars[k] == v
    assert merged["working_dir"] == str(launch.working_dir)
    # the old driver env (every name again, equal values) is what Ray refuses: the check can fail
    repeated = {"env_vars": {**patches.RAY_ENV_DEFAULTS, **launch.env}}
    assert _ray_merge(environ, repeated) is None


def test_driver_runtime_env_outside_a_job_carries_everything(tmp_path):
    cfg = compose("engine=openrlhf", "preset=smoke", "engine.launcher=local")
    launch = launch_mod.build_launch(cfg, tmp_path)
    driver = patches.driver_runtime_env(launch.env, {"NCCL_DEBUG": "INFO"})
    assert driver["env_vars"][CONFIG_ENV] == launch.env[CONFIG_ENV]
    assert driver["env_vars"]["NCCL_DEBUG"] == "INFO"  # a user's value wins, as in OpenRLHF's train()
    assert driver["env_vars"]["TOKENIZERS_PARALLELISM"] == "true"


# ---- the prompt order --------------------------------------------------------------------------------
def test_openrlhf_reads_the_prompt_file_in_the_local_engines_step_order(tmp_path):
    (ppo_trainer,) = openrlhf_modules("openrlhf.trainer.ppo_trainer")
    from openrlhf.utils import get_strategy
    from transformers import AutoTokenizer

    from trapo.data.loading import load_dataset
    from trapo.models.tiny import build_tiny_model

    cfg = compose("engine=openrlhf", "preset=smoke", "method=trapo", "train.steps=5", "engine.launcher=local",
                  "engine.actor_gpus_per_node=1", "engine.vllm_num_engines=1", "engine.vllm_tensor_parallel_size=1")
    launch = launch_mod.build_launch(cfg, tmp_path)
    n = launch_mod.write_prompts(cfg, launch.prompts_path)
    rows = [json.loads(line) for line in launch.prompts_path.read_text().splitlines()]
    assert n == len(rows) == 5 * int(cfg.train.prompts_per_step)
    # the file is in the local trainer's order (its questions, step by step)
    items = load_dataset(cfg.data).train
    idx = launch_mod.step_prompt_indices(len(items), 5, int(cfg.train.prompts_per_step), int(cfg.seed))
    assert all(items[i].question in r["prompt"] for i, r in zip(idx, rows))

    args = patches.parse_openrlhf_args(launch.openrlhf_argv)
    strategy = get_strategy(args)
    tok = AutoTokenizer.from_pretrained(str(build_tiny_model(dict(cfg.model.arch), dict(cfg.model.pretrain),
                                                              progress=False)))
    loader, _, _ = ppo_trainer.prepare_datasets(strategy, tok)  # OpenRLHF's own loader, as the controller builds it

    def order(dl):
        return [p for _, prompts, _, _ in dl for p in prompts]

    file_order = [r["prompt"] for r in rows]
    shuffled = order(loader)
    assert sorted(shuffled) == sorted(file_order)
    assert shuffled != file_order, "OpenRLHF's own loader no longer shuffles: read_prompts_in_file_order is moot"

    trainer = SimpleNamespace(prompts_dataloader=loader, strategy=strategy,
                              samples_generator=SimpleNamespace(prompts_dataloader=loader))
    patches.read_prompts_in_file_order(trainer)
    assert trainer.samples_generator.prompts_dataloader is trainer.prompts_dataloader
    assert order(trainer.prompts_dataloader) == file_order
    assert order(trainer.prompts_dataloader) == file_order  # every episode, the same order
    # per step: rollout.batch_size prompts, the local engine's step k batch
    per = int(cfg.train.prompts_per_step)
    got = order(trainer.prompts_dataloader)
    for k in range(5):
        assert [items[i].question in p for i, p in zip(idx[k * per:(k + 1) * per], got[k * per:(k + 1) * per])] \
            == [True] * per
