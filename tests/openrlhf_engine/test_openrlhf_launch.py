"""The launch: the dry run's command parses with OpenRLHF's own parser and names every setting; the
OpenRLHF functions the integration hooks into are unchanged; the driver-side classes and MLflow logger."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from openrlhf_support import REPO, compose, openrlhf_modules, require_openrlhf

require_openrlhf()
pytestmark = pytest.mark.openrlhf

patches, launch_mod, settings, logger_mod = openrlhf_modules(
    "trapo.engines.openrlhf.patches", "trapo.engines.openrlhf.launch", "trapo.engines.openrlhf.settings",
    "trapo.engines.openrlhf.mlflow_logger")
from trapo.engines.openrlhf import CONFIG_ENV  # noqa: E402

# engine settings that are not an OpenRLHF flag, and where the launch names them
NOT_FLAGS = {
    "name": "selects this engine",
    "rollout": "vllm: no flag of its own; cpu: flags.CPU_ROUTE and --vllm.sync_backend gloo (test_openrlhf_job.py)",
    "dry_run": "this printout",
    "launcher": "the command: ray job submit (ray_job) or the driver itself (local)",
    "ray_address": "ray job submit --address",
    "working_dir": "ray job submit --working-dir",
    "agent_workers": "read by the rollout agent from $TRAPO_OPENRLHF_CONFIG",
    "extra_args": "appended to the OpenRLHF flags",
    "data_dir": "--data.prompt_dataset",
    "max_prompt_len": "--data.max_len",
    "first_step": "which steps' prompts the prompt file holds (launch.write_prompts) and the rollout agent's step seeds",
}


def _get(args, flag: str):
    node = args
    for part in flag.lstrip("-").split("."):
        node = getattr(node, part)
    return node


def _split_launch(line: str):
    argv = shlex.split(line)
    env_json = None
    if argv[:3] == ["ray", "job", "submit"]:
        blob = argv[argv.index("--runtime-env-json") + 1]
        if blob.startswith("$(cat ") and blob.endswith(")"):  # the printed form: the JSON is in a file
            blob = Path(shlex.split(blob[len("$(cat "):-1])[0]).read_text()
        env_json = json.loads(blob)
        argv = argv[argv.index("--") + 1:]
    else:  # local launcher: VAR=value ... python -m ...
        env = {}
        while "=" in argv[0] and not argv[0].startswith("-"):
            k, v = argv.pop(0).split("=", 1)
            env[k] = v
        env_json = {"env_vars": env}
    assert argv[:3] == list(launch_mod.ENTRY)
    return argv[3:], env_json, shlex.split(line)


def _check_flags(cfg, launch, args):
    for f in launch.flags:
        got = _get(args, f.flag)
        if isinstance(f.value, tuple):
            assert tuple(got) == f.value, f.flag
        elif isinstance(f.value, bool):
            assert got is f.value, f.flag
        elif f.flag == "--actor.model_name_or_path":
            assert got == f.value
        else:
            assert type(f.value)(got) == f.value, (f.flag, got, f.value)
    named = {src.strip() for f in launch.flags if f.source for src in f.source.replace("*", "/").split("/")}
    for key in cfg.engine:
        assert key in NOT_FLAGS or f"engine.{key}" in named, f"engine.{key} is not named by the launch"
    for key in ("train.prompts_per_step", "train.group_size", "train.lr", "train.weight_decay", "train.grad_clip",
                "rollout.max_new_tokens", "rollout.temperature", "method.entropy_coef", "seed", "checkpoint.every"):
        assert key in named, key


def test_dry_run_prints_a_launch_that_openrlhf_parses(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "run.py"), "engine=openrlhf", "method=trapo",
         "engine.dry_run=true", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "# resolved config:" in out and "ray job submit" in out
    assert "checked: OpenRLHF's own parser" in out
    line = next(x for x in out.splitlines() if x.startswith("LAUNCH: "))[len("LAUNCH: "):]
    flags, runtime_env, full = _split_launch(line)
    args = patches.parse_openrlhf_args(flags)  # OpenRLHF's parser and its own argument checks

    cfg = compose("engine=openrlhf", "method=trapo", "engine.dry_run=true")
    launch = launch_mod.build_launch(cfg, run_dir)
    assert launch.openrlhf_argv == flags
    _check_flags(cfg, launch, args)
    assert full[full.index("--address") + 1] == cfg.engine.ray_address
    assert full[full.index("--working-dir") + 1] == str(REPO)
    # every TRAPO setting reaches the workers: the resolved config travels whole
    shipped = json.loads(runtime_env["env_vars"][CONFIG_ENV])
    assert shipped == settings.to_container(cfg)
    assert "resolved config" in out and "alpha: 0.1" in out and "thresholds: null" in out
    assert not (run_dir / "openrlhf" / "data").exists()  # a dry run writes nothing


@pytest.mark.parametrize("method", ["trapo", "grpo", "mg_luffy"])
def test_paper_preset_launch(tmp_path, method):
    cfg = compose("preset=paper", f"method={method}", "engine.launcher=local")
    assert cfg.engine.name == "openrlhf" and cfg.model.hub_id == "Qwen/Qwen2.5-Math-7B"
    assert cfg.data.hub_id == "Elliott/Openr1-Math-46k-8192" and cfg.data.reward == "math_verify"
    launch = launch_mod.build_launch(cfg, tmp_path)
    line = launch.shell()
    flags, env, _ = _split_launch(line)
    args = patches.parse_openrlhf_args(flags)
    _check_flags(cfg, launch, args)
    assert (args.rollout.batch_size, args.rollout.n_samples_per_prompt, args.train.batch_size) == (128, 8, 1024)
    assert args.actor.adam.lr == 5e-6 and args.rollout.max_new_tokens == 8192 and args.rollout.temperature == 1.0
    assert args.actor.entropy_coef == 0.001 and args.actor.max_norm == 1.0 and args.algo.kl.init_coef == 0.0
    assert args.algo.advantage.estimator == "dr_grpo" and args.actor.model_name_or_path == "Qwen/Qwen2.5-Math-7B"
    assert Path(args.train.agent_func_path).is_file()
    assert json.loads(env["env_vars"][CONFIG_ENV])["eval"]["temperature"] == 0.6
    assert launch.n_rows == 500 * 128
    # a response is prefix + completion (<= max_new_tokens): prompt + response is the whole sequence
    assert args.data.max_len == 1024 + 8192
    assert (args.actor.lr_scheduler, args.actor.lr_warmup_ratio) == ("constant", 0.0)


@pytest.mark.parametrize("warmup,steps", [(3, 100), (1, 7), (10, 500)])
def test_lr_warmup_reaches_openrlhf_as_whole_steps(tmp_path, warmup, steps):
    import math

    cfg = compose("preset=paper", "method=trapo", "engine.launcher=local", f"train.warmup_steps={warmup}",
                  f"train.steps={steps}")
    args = patches.parse_openrlhf_args(_split_launch(launch_mod.build_launch(cfg, tmp_path).shell())[0])
    assert args.actor.lr_scheduler == "constant_with_warmup"
    assert math.ceil(steps * args.actor.lr_warmup_ratio) == warmup  # OpenRLHF's own rounding


def test_sft_methods_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sft_fraction"):
        launch_mod.build_launch(compose("engine=openrlhf", "method=sft_rl"), tmp_path)


def test_hooked_openrlhf_functions_are_unchanged():
    assert patches.check_targets() == []


def test_driver_classes_subclass_openrlhf_ones():
    actor_mod, ppo_actor, ppo_trainer = openrlhf_modules(
        "trapo.engines.openrlhf.actor", "openrlhf.trainer.ray.ppo_actor", "openrlhf.trainer.ppo_trainer")
    data = settings.to_container(compose("engine=openrlhf", "preset=smoke"))
    pa = actor_mod.policy_actor_class(data)
    assert issubclass(pa.__ray_actor_class__, ppo_actor.PolicyModelActor.__ray_actor_class__)
    pt = patches.ppo_trainer_class(data)
    assert issubclass(pt.__ray_actor_class__, ppo_trainer.PPOTrainer.__ray_actor_class__)
    assert issubclass(actor_mod.TrapoActorPPOTrainer, ppo_actor.ActorPPOTrainer)


def test_trapo_imports_without_openrlhf():
    code = ("import sys; sys.modules['openrlhf'] = None; sys.modules['ray'] = None; "
            "import trapo, trapo.engines.openrlhf.launch, trapo.engines.openrlhf.mlflow_logger, "
            "trapo.engines.openrlhf.settings, trapo.engines.openrlhf.agent; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_mlflow_logger_uses_the_local_metric_names(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose("engine=openrlhf", "preset=smoke", "tracking.experiment=orl-test")
    log = logger_mod.MlflowLogger(cfg)
    status = {"trapo/loss": 0.5, "trapo/pg_loss": 0.2, "trapo/prefix_loss": 0.3, "trapo/ent_sum": 10.0,
              "trapo/ent_tok": 4.0, "trapo/exp_p_sum": 3.0, "trapo/exp_tok": 6.0, "trapo/exp_low": 3.0,
              "trapo/reward": 0.5, "trapo/unguided": 0.5, "trapo/reward_unguided": 0.25,
              "trapo/len_unguided": 5.0, "trapo/zero_signal": 0.25, "trapo/level_0": 0.5, "trapo/level_3": 0.5,
              "actor_grad_norm": 0.7, "actor_lr": 1e-6, "timing/generation": 3.0, "policy_loss": 0.5}
    log.log_train(1, status)
    log.close()
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(log.run_id)
    m = run.data.metrics
    assert m["train/loss"] == 0.5 and m["train/entropy"] == 2.5 and m["train/reward_mean"] == 0.5
    assert m["train/response_length"] == 10.0 and m["train/expert_token_prob"] == 0.5
    assert m["train/expert_low_prob_frac"] == 0.5 and m["train/guidance_level_3"] == 0.5
    assert m["train/guidance_level_1"] == 0.0 and m["train/grad_norm"] == 0.7 and m["time/rollout_s"] == 3.0
    assert m["openrlhf/actor_lr"] == 1e-6
    assert run.data.params["method.name"] == "trapo" and run.data.tags["engine"] == "openrlhf"


# ---- MLflow of a job: an outage after the start goes to the fallback file, a resumed job continues its run ----
def _job(tmp_path, monkeypatch, *, resume: bool):
    """The controller's logger for a job in tmp_path/run, the OpenRLHF args parsed from the launcher's flags."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose("engine=openrlhf", "preset=smoke", "tracking.experiment=orl-job", "engine.launcher=local",
                  f"resume={'auto' if resume else 'never'}")
    args = patches.parse_openrlhf_args(launch_mod.build_launch(cfg, tmp_path / "run").openrlhf_argv)
    return logger_mod.MlflowLogger.for_job(cfg, args), args


STATUS = {"trapo/loss": 0.5, "trapo/pg_loss": 0.2, "trapo/prefix_loss": 0.3, "actor_grad_norm": 0.7}


def test_mlflow_outage_after_the_start_goes_to_the_fallback_file(tmp_path, monkeypatch):
    import trapo.tracking

    monkeypatch.setattr(trapo.tracking, "BACKOFF_S", 0.01)
    log, args = _job(tmp_path, monkeypatch, resume=False)
    out = tmp_path / "run" / "openrlhf"
    assert logger_mod.job_output_dir(args) == out  # the launcher's output dir: checkpoints/ and final/ in it

    def down(*a, **k):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(log.tracker.client, "log_batch", down)
    monkeypatch.setattr(log.tracker.client, "set_terminated", down)
    log.log_train(3, STATUS)  # a multi-hour job goes on
    log.close()
    rows = [json.loads(line) for line in (out / "mlflow_fallback.jsonl").read_text().splitlines()]
    assert [(r["call"], r.get("step")) for r in rows] == [("log_metrics", 3), ("set_terminated", None)]
    assert rows[0]["metrics"]["train/loss"] == 0.5 and rows[0]["run_id"] == log.run_id
    assert "ConnectionError" in rows[0]["error"]


def test_a_resumed_job_continues_its_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    first, args = _job(tmp_path, monkeypatch, resume=False)
    first.log_train(1, STATUS)
    first.close()
    (Path(args.ckpt.path) / "_actor").mkdir(parents=True)  # OpenRLHF's checkpoint of step 1
    again, args = _job(tmp_path, monkeypatch, resume=True)
    assert logger_mod.resumes_from_checkpoint(args) and again.run_id == first.run_id
    again.log_train(2, STATUS)
    again.close()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("orl-job")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [first.run_id]
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "train/loss")) == [1, 2]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    # resume=never starts a new run, and a later resume continues that one
    fresh, _ = _job(tmp_path, monkeypatch, resume=False)
    assert fresh.run_id != first.run_id
    fresh.close()
    assert _job(tmp_path, monkeypatch, resume=True)[0].run_id == fresh.run_id
