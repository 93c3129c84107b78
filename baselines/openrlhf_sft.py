"""SFT on OpenRLHF: OpenRLHF's own SFT trainer (`openrlhf.cli.train_sft`, DeepSpeed), launched like the RL runs.

    python experiments/run.py preset=paper method=sft engine.dry_run=true     # print the launch, start nothing

The run is `deepspeed --module baselines.openrlhf_sft_entry <train_sft flags>` (through `ray job submit
--entrypoint-num-gpus` to the cluster, or on this machine with engine.launcher=local). The entry runs OpenRLHF's
own `train_sft` command line (parser, checks, `train`) with two changes, both in the driver process:
the MLflow logger in the trainer's tensorboard slot (the local engine's metric names: train/loss, train/lr,
train/grad_norm, train/phase_rl), and the training file read in its own order (OpenRLHF shuffles it), so every
step trains on the prompts the local engine's step would.

What the flags say (`sft_flags`; `SFT_TARGETS` pins the OpenRLHF functions this relies on):
- the data: a JSON-lines file the launcher writes, one row per (step, prompt) in the local trainer's step order,
  `prompt` = the formatted prompt (as the RL prompt file; no chat template or input template is applied again)
  and `response` = the reference solution followed by the tokenizer's EOS string (OpenRLHF then trains on the
  solution + EOS, exactly the local engine's tokens, instead of appending " " + EOS);
- one epoch, `--train.batch_size` = train.prompts_per_step: one optimizer step per trainer step; loss = token-mean
  NLL over the step's reference tokens (OpenRLHF normalises by the step's global token count, as the local engine);
- AdamW with train.sft_lr, betas (0.9, 0.999), train.weight_decay, clip train.grad_clip, constant LR (with
  train.warmup_steps of linear warmup), like the local SFT phase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from trapo.engines.openrlhf import CONFIG_ENV, OPENRLHF_VERSION
from trapo.engines.openrlhf.flags import (REPO, Flag, deepspeed_flags, max_len, model_source, optimizer_flags,
                                          rollout_engine, with_rollout_route)
from trapo.engines.openrlhf.launch import (Launch, data_source, input_warnings, readable_runtime_env, short_env,
                                           step_prompt_indices, tracking_uri_abs, training_set, write_jsonl_atomic)
from trapo.engines.openrlhf.launch import execute as run_launch
from trapo.engines.openrlhf.settings import encode, to_container

ENTRY_MODULE = "baselines.openrlhf_sft_entry"
SFT_DATA = "sft.jsonl"

# module, qualified name ("__main__" = the `if __name__ == "__main__":` block) -> sha256 of its source (0.11.2)
SFT_TARGETS: dict[tuple[str, str], str] = {
    ("openrlhf.cli.train_sft", "__main__"):
        "379b985ff596c6c5539451e8d58580c7d1d8ad380e10f7e89ddc2e950ed03e37",
    ("openrlhf.cli.train_sft", "train"):  # builds SFTTrainer and the strategy from the module globals we rebind
        "040f90949a67d25739e1fb60c893df29a604719417cde417e42cf10c7f5a8f8c",
    ("openrlhf.trainer.sft_trainer", "SFTTrainer.__init__"):  # the tensorboard slot
        "e9d30b14ba0f6a2a8f094a92a6fa4968b26b0673932d4f674e2300038e966963",
    ("openrlhf.trainer.sft_trainer", "SFTTrainer.fit"):  # one window = one step, its logs_dict keys
        "527b47003fab940e4a68a79859f64b93c0a481d08ecd2001cee1162a7ddbeff1",
    ("openrlhf.trainer.sft_trainer", "SFTTrainer.save_logs_and_checkpoints"):  # add_scalar("train/<k>", v, step)
        "cf075fc3e15f3e8bc3eeec3b5a9f8a4cccaa1f45abb21d76b805bddc71a9227b",
    ("openrlhf.datasets.sft_dataset", "SFTDataset.__getitem__"):  # no " " + EOS when the text ends with EOS
        "21e60b619102837b754ea1a9c6025624de507a1789e54fd5da33ca4f5571b41f",
    ("openrlhf.datasets.sft_dataset", "preprocess_data"):  # an empty input template leaves the prompt as it is
        "340842456200d6184e891660840f16972883f2158c443e19fa7632cacb6da619",
    ("openrlhf.utils.deepspeed.deepspeed", "DeepspeedStrategy.setup_dataloader"):  # the shuffle switch
        "f4b22fa08dc3c456c257bd47de018c6fdebb4c46753eea28c6517d164164f1d1",
}


# ---- OpenRLHF's train_sft command line, and DeepSpeed's launcher ------------------------------------------
def check_sft_targets() -> list[str]:
    """Problems found: a different OpenRLHF version, or a changed source of a function the SFT path relies on."""
    from trapo.engines.openrlhf.patches import check_targets

    return check_targets(SFT_TARGETS, owner="baselines/openrlhf_sft.py")


def run_sft_cli_block(argv: list[str], train: Callable[[Any], Any]) -> None:
    """Run OpenRLHF's `train_sft` __main__ block (parser, defaults, checks) on argv; it ends in `train(args)`."""
    from trapo.engines.openrlhf.patches import run_cli_block

    run_cli_block(argv, train, module="openrlhf.cli.train_sft")


def parse_sft_args(argv: list[str]) -> SimpleNamespace:
    """OpenRLHF's hierarchical SFT args for argv, after its own checks (nothing is started)."""
    got: list[Any] = []
    run_sft_cli_block(list(argv), got.append)
    return got[0]


def parse_deepspeed_launcher_args(argv: list[str]):
    """DeepSpeed's launcher (`deepspeed ...`) arguments, by its own parser."""
    from deepspeed.launcher.runner import parse_args

    return parse_args(list(argv))


# ---- the launch ---------------------------------------------------------------------------------------
@dataclass
class SFTLaunch(Launch):
    """A `Launch` whose command is DeepSpeed's launcher running the SFT entry on one node's GPUs."""

    num_nodes: int = 1
    gpus_per_node: int = 1
    steps: int = 0
    first_step: int = 0
    runtime_env_name: str = "runtime_env_sft.json"  # beside the RL launch's runtime_env.json (sft_rl has both)

    cpu: bool = False  # engine.rollout=cpu: one DeepSpeed rank on gloo, the entry run directly (no launcher)

    @property
    def launcher_argv(self) -> list[str]:
        if self.cpu:
            return ["python", "-m", ENTRY_MODULE]
        return ["deepspeed", "--num_nodes", str(self.num_nodes), "--num_gpus", str(self.gpus_per_node),
                "--module", ENTRY_MODULE]

    @property
    def entry_argv(self) -> list[str]:
        return [*self.launcher_argv, *self.openrlhf_argv]

    def command(self) -> list[str]:
        if self.launcher == "ray_job":  # the entrypoint itself needs the GPUs: Ray places it on a node with them
            return ["ray", "job", "submit", "--address", str(self.ray_address), "--working-dir", str(self.working_dir),
                    "--runtime-env-json", json.dumps(self.runtime_env(), sort_keys=True), "--entrypoint-num-gpus",
                    str(self.gpus_per_node), "--", *self.entry_argv]
        return list(self.entry_argv)


def output_root(cfg, run_dir: Path) -> Path:
    e = cfg.engine
    return Path(str(e.output_dir)) if e.get("output_dir") else Path(run_dir) / "openrlhf"


def data_path(cfg, run_dir: Path) -> Path:
    e = cfg.engine
    return (Path(str(e.data_dir)) if e.get("data_dir") else output_root(cfg, run_dir) / "data") / SFT_DATA


def sft_flags(cfg, out: Path, data: Path, *, steps: int) -> list[Flag]:
    """OpenRLHF train_sft flags for `steps` SFT steps writing to `out` (final model in out/final)."""
    e, t = cfg.engine, cfg.train
    F = Flag
    return [
        F("--model.model_name_or_path", model_source(cfg.model), "model.path / model.hub_id"),
        F("--data.dataset", str(data), "data (written by the launcher)"),
        F("--data.input_key", "prompt", None),
        F("--data.output_key", "response", None),
        F("--data.input_template", "", None),  # the prompts are formatted already (OpenRLHF's default adds "User: ")
        F("--data.max_len", max_len(cfg), "engine.max_len / engine.max_prompt_len + rollout.max_new_tokens"),
        F("--data.max_samples", steps * int(t.prompts_per_step), "train.steps * train.prompts_per_step"),
        F("--train.max_epochs", 1, None),
        F("--train.batch_size", int(t.prompts_per_step), "train.prompts_per_step (one optimizer step per step)"),
        F("--train.micro_batch_size", int(e.micro_train_batch_size), "engine.micro_train_batch_size"),
        F("--train.seed", int(cfg.seed), "seed"),
        *optimizer_flags(cfg, "--", lr=float(t.sft_lr), lr_source="train.sft_lr", steps=steps),
        *deepspeed_flags(cfg, out, gradient_checkpointing_flag="--model.gradient_checkpointing_enable"),
    ]


def build_sft_launch(cfg, run_dir: str | Path, *, steps: int | None = None, first_step: int = 0,
                     out: Path | None = None, data: Path | None = None) -> SFTLaunch:
    """The SFT launch of `steps` steps (default train.steps) starting at trainer step `first_step`."""
    from trapo.config import validate_config

    validate_config(cfg)
    cfg = with_rollout_route(cfg)
    cpu = rollout_engine(cfg) == "cpu"
    e = cfg.engine
    launcher = str(e.launcher)
    if launcher not in ("ray_job", "local"):
        raise ValueError(f"config engine.launcher must be 'ray_job' or 'local', got {launcher!r}")
    run_dir = Path(run_dir).resolve()
    steps = int(cfg.train.steps) if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"the SFT launch needs at least one step (got {steps})")
    out = output_root(cfg, run_dir) if out is None else Path(out)
    data = data_path(cfg, run_dir) if data is None else Path(data)
    flags = sft_flags(cfg, out, data, steps=steps)
    env = {CONFIG_ENV: encode(cfg), "MLFLOW_TRACKING_URI": tracking_uri_abs()}
    if cpu:  # what DeepSpeed's launcher would set for its one rank
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    working_dir = Path(str(e.working_dir)).resolve() if e.get("working_dir") else REPO
    n_nodes, n_gpus = int(e.num_nodes), int(e.actor_gpus_per_node)
    notes = [f"OpenRLHF's SFT trainer on {n_nodes} x {n_gpus} GPUs (engine.num_nodes x engine.actor_gpus_per_node); "
             "no vLLM"]
    if n_nodes > 1:
        notes.append("several nodes: DeepSpeed's launcher reads the hosts from /job/hostfile (its --hostfile default)")
    return SFTLaunch(flags=flags, extra_args=[], env=env, run_dir=run_dir, prompts_path=data,
                     n_rows=steps * int(cfg.train.prompts_per_step), data_source=data_source(cfg), launcher=launcher,
                     ray_address=str(e.ray_address) if e.get("ray_address") else None, working_dir=working_dir,
                     notes=notes, num_nodes=n_nodes, gpus_per_node=n_gpus, steps=steps, first_step=first_step,
                     cpu=cpu)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the training file ---------------------------------------------------------------------------------
def write_sft_data(cfg, path: Path, *, steps: int, first_step: int = 0) -> int:
    """OpenRLHF's SFT dataset: the prompts of steps [first_step, first_step + steps) in the local trainer's order,
    each with its reference solution + the EOS string."""
    from evaluation.prompts import build_prompt

    items, tok, template = training_set(cfg, needs="SFT needs one per prompt")
    if not tok.eos_token:
        raise ValueError("the tokenizer has no EOS token: OpenRLHF's SFT data needs one")
    idx = step_prompt_indices(len(items), int(steps), int(cfg.train.prompts_per_step), int(cfg.seed),
                              first_step=int(first_step))
    write_jsonl_atomic(path, ({"prompt": build_prompt(items[i].question, tok, template),
                               "response": items[i].solution + tok.eos_token} for i in idx))
    return len(idx)


# ---- dry run, launch --------------------------------------------------------------------------------------
def describe(cfg, launch: SFTLaunch, title: str = "SFT") -> str:
    warnings = [w for w in input_warnings(cfg, launch) if not w.startswith("prompt file")]
    if not launch.prompts_path.exists():
        warnings.append(f"SFT data {launch.prompts_path} does not exist yet: the launch writes it before it "
                        "starts the job (the GPU nodes must be able to read it)")
    lines = [
        f"# {title} on OpenRLHF {OPENRLHF_VERSION} (openrlhf.cli.train_sft): dry run (nothing was started)",
        *[f"# WARNING: {w}" for w in warnings],
        f"# 1. data: {launch.data_source}",
        f"#    -> {launch.prompts_path} ({launch.n_rows} rows = {launch.steps} steps from step {launch.first_step} x "
        f"train.prompts_per_step {cfg.train.prompts_per_step}; fields prompt, response)",
        f"# 2. launch ({launch.launcher}"
        + (f", Ray dashboard {launch.ray_address}, working dir {launch.working_dir}" if launch.launcher == "ray_job"
           else ", DeepSpeed's launcher on this machine") + "):",
        *readable_runtime_env(launch),
        short_env(launch, launch.shell(multiline=True)),
        "# the same command on one line:",
        "LAUNCH: " + short_env(launch, launch.shell()),
        f"# final model: {launch.output_dir}",
    ]
    lines += [f"# note: {n}" for n in launch.notes]
    return "\n".join(lines)


def validate_with_openrlhf(launch: SFTLaunch) -> str:
    """Parse the launch with OpenRLHF's train_sft parser and DeepSpeed's launcher parser when installed here."""
    try:
        parse_sft_args(launch.openrlhf_argv)
        ds = parse_deepspeed_launcher_args([*launch.launcher_argv[1:], *launch.openrlhf_argv])
        if ds.user_script != ENTRY_MODULE or list(ds.user_args) != launch.openrlhf_argv:
            raise ValueError(f"DeepSpeed's launcher would run {ds.user_script} {ds.user_args[:3]}...")
    except ImportError:
        return "# OpenRLHF is not installed here: the SFT flags were not checked with its parser"
    return "# checked: OpenRLHF's train_sft parser and DeepSpeed's launcher parser accept these arguments"


def execute(cfg, launch: SFTLaunch) -> None:
    """Write the SFT data file, print the command and run it (blocking); a failure stops the run."""
    def write() -> str:
        n = write_sft_data(cfg, launch.prompts_path, steps=launch.steps, first_step=launch.first_step)
        return f"wrote {n} SFT rows to {launch.prompts_path}"

    run_launch(cfg, launch, write)


def main(cfg, run_dir: str | Path) -> float:
    """method=sft on engine=openrlhf: the dry run or the launch."""
    launch = build_sft_launch(cfg, run_dir)
    if bool(cfg.engine.dry_run):
        from omegaconf import OmegaConf

        print(describe(cfg, launch))
        print(validate_with_openrlhf(launch))
        print("# resolved config:\n" + OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
        return 0.0
    execute(cfg, launch)
    if launch.cpu:
        from trapo.engines.openrlhf.launch import evaluate_job

        return evaluate_job(cfg, launch.output_dir, run_dir).get("eval/avg_accuracy", 0.0)
    return 0.0

