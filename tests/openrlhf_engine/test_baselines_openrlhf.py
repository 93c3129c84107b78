"""The baselines on engine=openrlhf, on CPU: the dry runs of `preset=paper method=sft|sft_rl|relift` print launches
that OpenRLHF's own parsers accept (train_sft's and train_ppo_ray's command lines, DeepSpeed's launcher); the SFT
data OpenRLHF's SFTDataset makes from the launcher's file are the local engine's tokens, in its step order; the SFT
trainer's log reaches MLflow under the local engine's names; sft_rl is one command (SFT, then RL from its output)
under one MLflow parent run; the OpenRLHF sources the SFT path relies on are unchanged."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from openrlhf_support import REPO, compose, openrlhf_modules, require_openrlhf

require_openrlhf()
pytestmark = pytest.mark.openrlhf

patches, launch_mod, sft_mod, entry_mod, sft_trainer_mod = openrlhf_modules(
    "trapo.engines.openrlhf.patches", "trapo.engines.openrlhf.launch", "baselines.openrlhf_sft",
    "baselines.openrlhf_sft_entry", "openrlhf.trainer.sft_trainer")
from trapo.engines.openrlhf import CONFIG_ENV  # noqa: E402

PAPER_STEPS, PAPER_BATCH = 500, 128


def _launches(out: str) -> list[tuple[list[str], dict, list[str]]]:
    """(program argv after `--`, runtime env, the whole command) of every `LAUNCH: ` line, in order."""
    found = []
    for line in out.splitlines():
        if not line.startswith("LAUNCH: "):
            continue
        full = shlex.split(line[len("LAUNCH: "):])
        assert full[:3] == ["ray", "job", "submit"], full[:5]
        blob = full[full.index("--runtime-env-json") + 1]
        if blob.startswith("$(cat ") and blob.endswith(")"):
            blob = Path(shlex.split(blob[len("$(cat "):-1])[0]).read_text()
        found.append((full[full.index("--") + 1:], json.loads(blob), full))
    return found


def _dry_run(tmp_path, method):
    run_dir = tmp_path / f"run_{method}"
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), "preset=paper", f"method={method}",
                           "engine.dry_run=true", f"hydra.run.dir={run_dir}"],  # the command
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, run_dir


def _sft(argv):
    """A `deepspeed --num_nodes .. --num_gpus .. --module baselines.openrlhf_sft_entry <flags>` command, parsed by
    DeepSpeed's launcher parser and OpenRLHF's train_sft parser."""
    assert argv[0] == "deepspeed"
    ds = sft_mod.parse_deepspeed_launcher_args(argv[1:])
    assert ds.module and ds.user_script == sft_mod.ENTRY_MODULE
    return ds, sft_mod.parse_sft_args(list(ds.user_args))


def _rl(argv):
    assert argv[:3] == list(launch_mod.ENTRY)
    return patches.parse_openrlhf_args(argv[3:])


def test_paper_sft_dry_run_is_an_openrlhf_sft_launch(tmp_path):
    out, run_dir = _dry_run(tmp_path, "sft")
    assert "checked: OpenRLHF's train_sft parser and DeepSpeed's launcher parser" in out
    (argv, env, full), = _launches(out)
    ds, args = _sft(argv)
    assert (ds.num_nodes, ds.num_gpus) == (1, 8) and full[full.index("--entrypoint-num-gpus") + 1] == "8"
    assert args.model.model_name_or_path == "Qwen/Qwen2.5-Math-7B"
    assert (args.train.batch_size, args.train.max_epochs, args.data.max_samples) == (128, 1, 500 * 128)
    assert args.adam.lr == 5e-6 and tuple(args.adam.betas) == (0.9, 0.999) and args.max_norm == 1.0
    assert args.lr_scheduler == "constant" and args.data.input_template == ""
    assert (args.data.input_key, args.data.output_key, args.data.apply_chat_template) == ("prompt", "response", False)
    assert args.data.max_len == 1024 + 8192 and args.ds.zero_stage == 2 and args.ds.param_dtype == "bf16"
    assert args.ckpt.output_dir == str(run_dir / "openrlhf" / "final") and args.ckpt.save_hf
    assert args.data.dataset == str(run_dir / "openrlhf" / "data" / "sft.jsonl")
    shipped = json.loads(env["env_vars"][CONFIG_ENV])
    assert shipped["method"]["name"] == "sft" and shipped["train"]["sft_lr"] == 5e-6
    assert not (run_dir / "openrlhf" / "data").exists()  # a dry run writes no data


def test_paper_sft_rl_dry_run_is_sft_then_rl_from_its_output(tmp_path):
    out, run_dir = _dry_run(tmp_path, "sft_rl")
    assert out.count("checked:") == 2
    (sft_argv, sft_env, _), (rl_argv, rl_env, _) = _launches(out)
    _, sft = _sft(sft_argv)
    rl = _rl(rl_argv)
    half = PAPER_STEPS // 2
    assert sft.data.max_samples == half * PAPER_BATCH
    assert sft.ckpt.output_dir == str(run_dir / "openrlhf" / "sft" / "final")
    assert rl.actor.model_name_or_path == sft.ckpt.output_dir  # RL starts from the SFT model
    assert rl.ckpt.output_dir == str(run_dir / "openrlhf" / "final")
    assert rl.algo.advantage.estimator == "dr_grpo" and rl.actor.adam.lr == 5e-6
    shipped = json.loads(rl_env["env_vars"][CONFIG_ENV])
    assert shipped["method"]["sft_fraction"] == 0.0 and shipped["train"]["steps"] == half
    assert shipped["engine"]["first_step"] == half  # its prompt file holds steps 251-500
    assert json.loads(sft_env["env_vars"][CONFIG_ENV])["train"]["steps"] == PAPER_STEPS
    assert f"{half * PAPER_BATCH} rows" in out
    # two launches of one run keep two runtime-env files
    assert (run_dir / "runtime_env.json").exists() and (run_dir / "runtime_env_sft.json").exists()


def test_paper_relift_dry_run_is_the_rl_launch_with_relift(tmp_path):
    out, _ = _dry_run(tmp_path, "relift")
    (argv, env, _), = _launches(out)
    args = _rl(argv)
    assert args.algo.advantage.estimator == "dr_grpo" and args.rollout.n_samples_per_prompt == 8
    assert args.actor.entropy_coef == 0.001 and args.actor.adam.lr == 5e-6
    shipped = json.loads(env["env_vars"][CONFIG_ENV])
    assert shipped["method"]["relift"] == {"sft_data_size": 128, "lr": 5e-6, "betas": [0.9, 0.999],
                                           "weight_decay": 0.01, "eps": 1e-8, "grad_clip": 1.0, "entropy_coef": 0.001}
    assert shipped["method"]["guidance"] == "none" and shipped["method"]["prefix_loss"] == "none"


def test_sft_flags_carry_every_setting(tmp_path):
    cfg = compose("preset=paper", "method=sft", "engine.launcher=local", "train.warmup_steps=10")
    launch = sft_mod.build_sft_launch(cfg, tmp_path)
    ds, args = _sft(launch.entry_argv)
    for f in launch.flags:
        node = args
        for part in f.flag.lstrip("-").split("."):
            node = getattr(node, part)
        if isinstance(f.value, tuple):
            assert tuple(node) == f.value, f.flag
        elif isinstance(f.value, bool):
            assert node is f.value, f.flag
        elif f.value is not None:
            assert type(f.value)(node) == f.value, (f.flag, node, f.value)
    import math

    assert math.ceil(PAPER_STEPS * args.lr_warmup_ratio) == 10  # OpenRLHF's rounding of the warmup
    env_prefix = launch.shell().split(" deepspeed ")[0]
    assert CONFIG_ENV in env_prefix and "MLFLOW_TRACKING_URI" in env_prefix  # local launcher: env on the line


def test_sft_targets_unchanged():
    assert sft_mod.check_sft_targets() == []


# ---- the data: OpenRLHF's SFTDataset on the launcher's file == the local engine's tokens, in step order --------
def test_sft_data_are_the_local_engines_tokens_in_step_order(tmp_path):
    from openrlhf.datasets import SFTDataset
    from transformers import AutoTokenizer

    from trapo.data.loading import load_dataset
    from trapo.engines.openrlhf.agent import tokenize_prompt
    from trapo.models.tiny import PROMPT_TEMPLATE, build_tiny_model
    from trapo.prompts import build_prompt

    cfg = compose("engine=openrlhf", "preset=smoke", "method=sft", "engine.launcher=local", "train.steps=3")
    launch = sft_mod.build_sft_launch(cfg, tmp_path, steps=2, first_step=1)
    n = sft_mod.write_sft_data(cfg, launch.prompts_path, steps=2, first_step=1)
    assert n == 2 * int(cfg.train.prompts_per_step) == launch.n_rows
    args = sft_mod.parse_sft_args(launch.openrlhf_argv)
    tok = AutoTokenizer.from_pretrained(str(build_tiny_model(dict(cfg.model.arch), dict(cfg.model.pretrain),
                                                             progress=False)))
    import datasets

    rows = datasets.load_dataset("json", data_files=str(launch.prompts_path))["train"]
    ds = SFTDataset(rows, tok, args.data.max_len, SimpleNamespace(args=args), input_template=args.data.input_template,
                    num_processors=1)
    items = load_dataset(cfg.data).train
    idx = launch_mod.step_prompt_indices(len(items), 2, int(cfg.train.prompts_per_step), int(cfg.seed), first_step=1)
    from trapo.trainer import Trainer

    order = Trainer.__new__(Trainer)
    order.cfg, order.data = cfg, SimpleNamespace(train=items)
    assert idx == order._batch_indices(1) + order._batch_indices(2)  # the trainer's steps 2 and 3
    for k, i in enumerate(idx):
        text = build_prompt(items[i].question, tok, PROMPT_TEMPLATE)
        want = tokenize_prompt(tok, text, items[i].solution, items[i].answer)  # the local trainer's tokens
        input_ids, _, loss_mask = ds[k]
        assert input_ids[0].tolist() == want.prompt_ids + want.solution_ids  # solution + EOS, nothing added
        trained = [t for t, m in zip(input_ids[0, 1:].tolist(), loss_mask[0, :-1].tolist()) if m]
        assert trained == want.solution_ids  # the loss covers the solution and its EOS, never the prompt


def test_sft_loader_reads_the_file_in_order():
    calls = []

    class Strategy:
        def setup_dataloader(self, dataset, batch_size, pin_memory=False, shuffle=True, collate_fn=None, **kw):
            calls.append((batch_size, pin_memory, shuffle, collate_fn, kw))

    s = Strategy()
    entry_mod.in_file_order(s)
    s.setup_dataloader("data", 4, True, True, "collate", num_workers=0)  # how train_sft calls it
    assert calls == [(4, True, False, "collate", {"num_workers": 0})]


# ---- MLflow --------------------------------------------------------------------------------------------------
def test_sft_log_reaches_mlflow_under_the_local_names(tmp_path, monkeypatch):
    """OpenRLHF's own `SFTTrainer.save_logs_and_checkpoints` writing into the MLflow writer in its tensorboard slot."""
    from mlflow.tracking import MlflowClient

    SFTTrainer = sft_trainer_mod.SFTTrainer
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose("engine=openrlhf", "preset=smoke", "method=sft", "tracking.experiment=sft-test")
    writer = entry_mod.MlflowScalars(cfg)
    trainer = SimpleNamespace(_wandb=None, _tensorboard=writer, eval_dataloader=None,
                              strategy=SimpleNamespace(is_rank_0=lambda: True))
    args = SimpleNamespace(logger=SimpleNamespace(logging_steps=1), eval=SimpleNamespace(steps=10**9),
                           ckpt=SimpleNamespace(save_steps=float("inf")))
    for step, loss in ((1, 2.5), (2, 2.0)):
        logs = {"gpt_loss": loss / 4, "lr": 5e-6, "grad_norm": 0.5 * step, "loss_mean": loss}
        SFTTrainer.save_logs_and_checkpoints(trainer, args, step, None, logs, {})
    writer.close()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(writer.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["method"] == "sft" and run.data.tags["engine"] == "openrlhf"
    assert run.data.params["method.name"] == "sft"
    assert [m.value for m in client.get_metric_history(writer.run_id, "train/loss")] == [2.5, 2.0]
    m = run.data.metrics
    assert m["train/lr"] == 5e-6 and m["train/grad_norm"] == 1.0 and m["train/phase_rl"] == 0.0
    assert m["openrlhf/gpt_loss"] == 0.5
    assert [h.step for h in client.get_metric_history(writer.run_id, "train/grad_norm")] == [1, 2]


def test_sft_rl_is_one_command_under_one_parent_run(tmp_path, monkeypatch):
    """The runner writes both data files and runs both launches in order, the second from the first's model; both
    jobs' configs name the parent run, which finishes when both did."""
    from mlflow.tracking import MlflowClient

    from baselines import RunContext
    from baselines import sft_rl

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose("engine=openrlhf", "preset=smoke", "method=sft_rl", "engine.launcher=local",
                  "tracking.experiment=sft-rl-test", "engine.num_nodes=1", "engine.actor_gpus_per_node=1",
                  "engine.vllm_num_engines=1", "engine.vllm_tensor_parallel_size=1", "engine.max_prompt_len=256")
    ran = []

    def fake_call(cmd, env=None, cwd=None):
        ran.append((list(cmd), dict(env or {})))
        if cmd[0] == "deepspeed":  # the SFT job leaves its model
            out = Path(sft_mod.parse_sft_args(cmd[cmd.index(sft_mod.ENTRY_MODULE) + 1:]).ckpt.output_dir)
            out.mkdir(parents=True)
            (out / "config.json").write_text("{}")
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    run_dir = tmp_path / "run"
    assert sft_rl.run(cfg, RunContext(output_dir=run_dir, overrides=["method=sft_rl"])) == {}
    (sft_cmd, sft_env), (rl_cmd, rl_env) = ran
    # the local launcher runs the driver with this interpreter (launch.execute), not whatever `python` PATH finds
    assert sft_cmd[0] == "deepspeed" and rl_cmd[:3] == [sys.executable, *launch_mod.ENTRY[1:]]
    rl_cmd = list(launch_mod.ENTRY[:1]) + rl_cmd[1:]
    _, sft_args = _sft(sft_cmd)
    rl_args = _rl(rl_cmd)
    assert rl_args.actor.model_name_or_path == sft_args.ckpt.output_dir
    n_sft = int(cfg.train.steps) // 2
    per = int(cfg.train.prompts_per_step)
    sft_rows = (run_dir / "openrlhf" / "data" / "sft.jsonl").read_text().splitlines()
    rl_rows = Path(rl_args.data.prompt_dataset).read_text().splitlines()
    assert len(sft_rows) == n_sft * per and len(rl_rows) == (int(cfg.train.steps) - n_sft) * per
    assert [json.loads(json.loads(r)["label"])["row"] for r in rl_rows] == \
        list(range(len(rl_rows)))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sft-rl-test")
    (parent,) = client.search_runs([exp.experiment_id])
    assert parent.info.status == "FINISHED" and parent.data.tags["method"] == "sft_rl"
    for env in (sft_env, rl_env):
        shipped = json.loads(env[CONFIG_ENV])
        assert shipped["tracking"]["parent_run_id"] == parent.info.run_id
    assert json.loads(sft_env[CONFIG_ENV])["tracking"]["run_name"] == "sft_rl: sft"
    assert json.loads(rl_env[CONFIG_ENV])["tracking"]["run_name"] == "sft_rl: rl"

    # a rerun after a failed RL job: the SFT phase is not run again, the parent of the failed try is FAILED
    ran.clear()
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None, cwd=None: ran.append(cmd) or 3)
    with pytest.raises(SystemExit):
        sft_rl.run(cfg, RunContext(output_dir=run_dir))
    assert len(ran) == 1 and ran[0][:3] == [sys.executable, *launch_mod.ENTRY[1:]]
    statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]
