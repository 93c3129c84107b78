"""From the Hydra config to an OpenRLHF run: the command line, the Ray job, the prompt file, the dry run.

    python experiments/run.py engine=openrlhf method=trapo model=qwen2.5-math-7b data=openr1-math-46k preset=paper
    python experiments/run.py engine=openrlhf method=trapo engine.dry_run=true     # print the launch, start nothing

The run is OpenRLHF's `train_ppo_ray` driven by `python -m trapo.engines.openrlhf.entry` with OpenRLHF's
own flags (`openrlhf_flags` maps every setting; `FLAGS_DOC` in docs/openrlhf.md lists them). The TRAPO
settings that OpenRLHF has no flag for (method, guidance, reward, tracking) travel as the resolved config
in $TRAPO_OPENRLHF_CONFIG. The flags are a pure function of the config (flags.py); this module does the job's
I/O: the prompt file, the environment, the subprocess, the final evaluation. It imports neither OpenRLHF nor Ray:
the dry run works anywhere.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trapo.engines.openrlhf import ACTOR_HOOKS_ENV, CONFIG_ENV, OPENRLHF_VERSION
from trapo.data.order import step_prompt_indices  # noqa: F401  (the prompt file's order; baselines use it from here)
from trapo.engines.openrlhf.flags import (REPO, Flag, context_problem, openrlhf_flags, rollout_engine,
                                         with_rollout_route)
from trapo.engines.openrlhf.settings import check_supported, encode, to_container

ENTRY = ("python", "-m", "trapo.engines.openrlhf.entry")
# not shipped to the cluster with the job's working dir
WORKING_DIR_EXCLUDES = [".git", ".venv*", "outputs", "multirun", "mlruns", "mlartifacts", "mlflow.db", ".cache",
                        "results", "**/__pycache__", "*.egg-info"]


@dataclass
class Launch:
    flags: list[Flag]
    extra_args: list[str]
    env: dict[str, str]
    run_dir: Path
    prompts_path: Path
    n_rows: int
    data_source: str
    launcher: str
    ray_address: str | None
    working_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def openrlhf_argv(self) -> list[str]:
        return [tok for f in self.flags for tok in f.argv()] + list(self.extra_args)

    @property
    def entry_argv(self) -> list[str]:
        return [*ENTRY, *self.openrlhf_argv]

    @property
    def output_dir(self) -> str:
        """Where OpenRLHF saves the final model (its --ckpt.output_dir)."""
        return next(str(f.value) for f in self.flags if f.flag == "--ckpt.output_dir")

    def runtime_env(self) -> dict:
        return {"env_vars": dict(self.env), "excludes": list(WORKING_DIR_EXCLUDES)}

    def command(self) -> list[str]:
        """The exact command the launcher runs."""
        if self.launcher == "ray_job":
            return ["ray", "job", "submit", "--address", str(self.ray_address), "--working-dir", str(self.working_dir),
                    "--runtime-env-json", json.dumps(self.runtime_env(), sort_keys=True), "--", *self.entry_argv]
        return list(self.entry_argv)

    def shell(self, multiline: bool = False) -> str:
        cmd = self.command()
        prefix = "" if self.launcher == "ray_job" else " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items()) + " "
        if not multiline:
            return prefix + shlex.join(cmd)
        lines, cur = [], []
        for tok in cmd:
            if tok.startswith("--") and cur and tok != "--":
                lines.append(shlex.join(cur))
                cur = []
            cur.append(tok)
        lines.append(shlex.join(cur))
        return prefix + " \\\n    ".join(lines)


# ---- paths and sizes ---------------------------------------------------------------------------------


def tracking_uri_abs() -> str:
    from trapo.tracking import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def n_prompt_rows(cfg) -> int:
    """The prompt file holds exactly the steps' prompts, so OpenRLHF runs train.steps steps in one episode."""
    return int(cfg.train.steps) * int(cfg.train.prompts_per_step)


def data_source(cfg) -> str:
    d = cfg.data
    if d.kind == "synthetic":
        return f"synthetic (seed {d.seed}, {d.train.n} training problems)"
    return f"{d.path}" + (f" (hub: {d.hub_id}, see scripts/prepare_openr1.py)" if d.get("hub_id") else "")


def input_warnings(cfg, launch: "Launch") -> list[str]:
    """Every input of the launch that is missing here, each with how to get it (the dry run prints them)."""
    out = []
    d, m = cfg.data, cfg.model
    data_missing = d.kind != "synthetic" and not Path(str(d.path)).is_file()
    if data_missing:
        data_path = Path(str(d.path)).resolve()
        how = (f"python scripts/prepare_openr1.py --out {data_path}   (hub {d.hub_id})" if d.get("hub_id")
               else "set data.path to a JSONL file with the fields " + ", ".join(dict(d.fields).values()))
        out.append(f"data file {data_path} does not exist: {how}")
    if not launch.prompts_path.exists():
        out.append(f"prompt file {launch.prompts_path} does not exist yet: the launch (engine.dry_run=false) writes "
                   f"it from {'data.path (missing, see above)' if data_missing else launch.data_source} before "
                   "it submits the job; the Ray workers must be able to read it (a shared filesystem)")
    if m.kind == "hf":
        path = Path(str(m.path)).resolve()
        if not (path / "config.json").is_file():
            hub = m.get("hub_id")
            out.append(f"model dir {path} does not exist" + (
                f": the launch names the hub id {hub} instead, which every node then downloads (internet and the "
                f"same revision on all nodes); for a local copy: huggingface-cli download {hub} --local-dir {path}"
                if hub else ": set model.path to a Hugging Face model directory"))
    ctx = context_problem(cfg)
    if ctx:
        out.append(ctx)
    return out


def build_launch(cfg, run_dir: str | Path, actor_hooks: Sequence[str] = ()) -> Launch:
    """The job for `cfg`; `actor_hooks`: the actor's step hooks ("module:Class", trapo/hooks.py), a runner's."""
    from trapo.config import validate_config
    from trapo.hooks import check_claimed, import_hook

    validate_config(cfg)
    check_supported(cfg)
    check_claimed(cfg.method, [import_hook(h) for h in actor_hooks])
    cfg = with_rollout_route(cfg)
    e = cfg.engine
    launcher = str(e.launcher)
    if launcher not in ("ray_job", "local"):
        raise ValueError(f"config engine.launcher must be 'ray_job' or 'local', got {launcher!r}")
    run_dir = Path(run_dir).resolve()
    flags = openrlhf_flags(cfg, run_dir, launcher=launcher)
    prompts = Path(next(f.value for f in flags if f.flag == "--data.prompt_dataset"))
    env = {CONFIG_ENV: encode(cfg), "MLFLOW_TRACKING_URI": tracking_uri_abs()}
    if actor_hooks:
        env[ACTOR_HOOKS_ENV] = ",".join(actor_hooks)
    working_dir = Path(str(e.working_dir)).resolve() if e.get("working_dir") else REPO
    notes = []
    if bool(e.colocate_all) and int(e.num_nodes) * int(e.actor_gpus_per_node) != \
            int(e.vllm_num_engines) * int(e.vllm_tensor_parallel_size):
        raise ValueError("config engine.colocate_all: num_nodes x actor_gpus_per_node must equal "
                         "vllm_num_engines x vllm_tensor_parallel_size (OpenRLHF shares each GPU between both)")
    return Launch(flags=flags, extra_args=[str(a) for a in (e.get("extra_args") or [])], env=env, run_dir=run_dir,
                  prompts_path=prompts, n_rows=n_prompt_rows(cfg), data_source=data_source(cfg), launcher=launcher,
                  ray_address=str(e.ray_address) if e.get("ray_address") else None, working_dir=working_dir,
                  notes=notes)


# ---- the prompt file -------------------------------------------------------------------------------
def training_set(cfg, *, needs: str):
    """The training problems (each with a reference solution: `needs` says why), the model's tokenizer and
    the prompt template, as the local engine formats them."""
    from transformers import AutoTokenizer

    from trapo.data.loading import load_dataset
    from trapo.models.loading import check_model_source, resolve_model_path

    check_model_source(cfg.model)  # before the data and before any job starts: names model.path
    items = load_dataset(cfg.data).train  # a bad row fails here, naming file, line and field
    if not items:
        raise ValueError("the training set is empty")
    missing = sum(1 for it in items if not it.solution)
    if missing:
        raise ValueError(f"{missing} training rows have no reference solution: {needs}")
    template = cfg.model.get("prompt_template")
    if cfg.model.kind == "tiny":
        from trapo.models.tiny import PROMPT_TEMPLATE

        template = template or PROMPT_TEMPLATE
    mpath = resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(str(mpath) if Path(mpath).exists() else str(cfg.model.hub_id))
    return items, tok, template


def write_jsonl_atomic(path: Path, rows) -> None:
    """Write dict rows as JSON lines to a temporary file, then move it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_prompts(cfg, path: Path) -> int:
    """OpenRLHF's prompt dataset: formatted prompt + label (gold answer and reference solution)."""
    from trapo.engines.openrlhf.agent import encode_label
    from evaluation.prompts import build_prompt

    items, tok, template = training_set(cfg, needs="TRAPO's prefixes need one per prompt")
    idx = step_prompt_indices(len(items), int(cfg.train.steps), int(cfg.train.prompts_per_step), int(cfg.seed),
                              first_step=int(cfg.engine.first_step))
    write_jsonl_atomic(path, ({"prompt": build_prompt(items[i].question, tok, template),
                               "label": encode_label(items[i].answer, items[i].solution, row=row)}
                              for row, i in enumerate(idx)))
    return len(idx)


# ---- dry run and launch --------------------------------------------------------------------------------
def describe(cfg, launch: Launch) -> str:
    from omegaconf import OmegaConf

    warnings = input_warnings(cfg, launch)
    lines = [
        f"# TRAPO on OpenRLHF {OPENRLHF_VERSION}: dry run (nothing was started)",
        *([f"# WARNING: {w}" for w in warnings] or ["# inputs: the data file, model dir and context length are fine"]),
        f"# 1. prompts: {launch.data_source}",
        f"#    -> {launch.prompts_path} ({launch.n_rows} rows = train.steps {cfg.train.steps} x "
        f"train.prompts_per_step {cfg.train.prompts_per_step}; fields prompt, label)",
        f"# 2. launch ({launch.launcher}"
        + (f", Ray dashboard {launch.ray_address}, working dir {launch.working_dir}" if launch.launcher == "ray_job"
           else ", driver on this machine; RAY_ADDRESS picks the cluster") + "):",
        *readable_runtime_env(launch),
        short_env(launch, launch.shell(multiline=True)),
        "# the same command on one line:",
        "LAUNCH: " + short_env(launch, launch.shell()),
        f"# ${CONFIG_ENV} carries the resolved config below to every Ray worker "
        "(rollout agent, actors, MLflow logger).",
    ]
    lines += [f"# note: {n}" for n in launch.notes]
    lines += ["# resolved config:", OmegaConf.to_yaml(OmegaConf.create(to_container(cfg)))]
    return "\n".join(lines)


def runtime_env_path(launch: Launch) -> Path:
    # a second launch of the same run (sft_rl's SFT job, baselines/openrlhf_sft.py) names its own file
    return Path(launch.run_dir) / getattr(launch, "runtime_env_name", "runtime_env.json")


def short_env(launch: Launch, shell: str) -> str:
    """A printed command with the --runtime-env-json blob replaced by "$(cat <file>)" (the file holds it)."""
    if launch.launcher != "ray_job":
        return shell
    blob = json.dumps(launch.runtime_env(), sort_keys=True)
    path = runtime_env_path(launch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(blob)
    return shell.replace(shlex.quote(blob), f'"$(cat {shlex.quote(str(path))})"')


def readable_runtime_env(launch: Launch) -> list[str]:
    """The Ray runtime env, one variable a line (the config blob by size: it is printed below as YAML)."""
    if launch.launcher != "ray_job":
        return []
    env = launch.runtime_env()
    lines = [f"# runtime env ({runtime_env_path(launch)}): excludes {', '.join(env['excludes'])}"]
    for k, v in sorted(env["env_vars"].items()):
        lines.append(f"#   {k}=" + (f"<the resolved config below, {len(v)} characters>" if k == CONFIG_ENV else v))
    return lines


def validate_with_openrlhf(launch: Launch) -> str:
    """Parse the launch with OpenRLHF's own parser and checks when OpenRLHF is installed here."""
    try:
        from trapo.engines.openrlhf.patches import parse_openrlhf_args
    except ImportError as e:  # pragma: no cover
        return f"# not checked with OpenRLHF's parser ({e})"
    try:
        parse_openrlhf_args(launch.openrlhf_argv)
    except ImportError:
        return "# OpenRLHF is not installed here: the flags were not checked with its parser"
    return "# checked: OpenRLHF's own parser and argument checks accept these flags"


def main(cfg, run_dir: str | Path, actor_hooks: Sequence[str] = ()) -> float:
    launch = build_launch(cfg, run_dir, actor_hooks=actor_hooks)
    if bool(cfg.engine.dry_run):
        print(describe(cfg, launch))
        print(validate_with_openrlhf(launch))
        return 0.0
    execute(cfg, launch, lambda: f"wrote {write_prompts(cfg, launch.prompts_path)} prompts to {launch.prompts_path}")
    if rollout_engine(cfg) == "cpu":
        return evaluate_job(cfg, launch.output_dir, run_dir).get("eval/avg_accuracy", 0.0)
    return 0.0


def evaluate_job(cfg, model_dir: str | Path, run_dir: str | Path, job_dir: str | Path | None = None,
                 run_id: str | None = None) -> dict:
    """The local trainer's final evaluation (`Trainer.final_eval`: valid and every evaluation split, same sampler,
    seed and grader) of the job's final model, logged to the job's MLflow run with `score`, which it then ends
    FINISHED; also <run dir>/final_metrics.json and <run dir>/eval/. On engine.rollout=cpu the driver's machine
    evaluates (a GPU cluster's final model is evaluated with experiments/evaluate.py)."""
    import torch
    from omegaconf import OmegaConf

    from evaluation.grader import Grader
    from evaluation.runner import evaluate_items, write_results
    from trapo.data.loading import load_dataset
    from trapo.engines.backend import EngineBackend
    from trapo.engines.local import LocalEngine
    from trapo.engines.openrlhf.mlflow_logger import stored_run_id
    from trapo.models.loading import load_model_and_tokenizer
    from trapo.tracking import Tracker
    from evaluation.runner import eval_metrics
    from trapo.engines.local import torch_threads

    torch.set_num_threads(torch_threads(cfg))
    run_dir = Path(run_dir)
    job_dir = Path(job_dir) if job_dir is not None else Path(model_dir).parent
    model_cfg = OmegaConf.create(to_container(cfg.model))
    template = model_cfg.get("prompt_template")
    if model_cfg.kind == "tiny":
        from trapo.models.tiny import PROMPT_TEMPLATE

        template = template or PROMPT_TEMPLATE
    model_cfg.kind, model_cfg.path, model_cfg.prompt_template = "hf", str(model_dir), template
    model, tok, template = load_model_and_tokenizer(model_cfg, device="cpu")
    data = load_dataset(cfg.data)
    engine = LocalEngine(model, tok, lr=0.0, micro_batch_size=int(cfg.train.micro_batch_size), device="cpu")
    backend = EngineBackend(engine, template, int(cfg.eval.batch_size))
    grader = Grader(progress=False)
    ev = cfg.eval
    splits = ({"valid": data.valid} if data.valid else {}) | dict(data.eval_splits)
    try:
        results = {name: evaluate_items(items, backend, grader, n_samples=int(ev.n_samples),
                                        temperature=float(ev.temperature), max_new_tokens=int(ev.max_new_tokens),
                                        seed=int(cfg.seed), name=name) for name, items in splits.items()}
    finally:
        grader.close()
    write_results(results, run_dir / "eval")
    final = eval_metrics(results)
    (run_dir / "final_metrics.json").write_text(json.dumps(final, indent=2))
    run_id = run_id or stored_run_id(job_dir)  # default: the job's own run (mlflow_run.json)
    if run_id is None:
        raise RuntimeError(f"{job_dir}: no MLflow run of the job (mlflow_run.json): the evaluation is not logged")
    score = final.get("eval/avg_accuracy", final.get("valid/accuracy"))
    tracker = Tracker(str(cfg.tracking.experiment), run_name="", run_id=run_id)
    tracker.log_metrics({**final, **({"score": score} if score is not None else {})}, step=int(cfg.train.steps))
    tracker.finish("FINISHED")
    print("final: " + " ".join(f"{k}={v:.3f}" for k, v in final.items()), flush=True)
    speed = step_times(tracker.client, run_id)
    if speed:
        print(speed, flush=True)
    return final


def step_times(client, run_id: str) -> str | None:
    """One line: mean rollout and update seconds per step of the job's run (OpenRLHF's timing/generation and
    timing/ppo_train, logged as time/rollout_s and time/update_s), without step 1 when there are more (its update
    includes DeepSpeed's first-step set-up)."""
    parts = []
    for name, what in (("time/rollout_s", "rollout"), ("time/update_s", "update"), ("time/step_s", "step")):
        hist = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        vals = [m.value for m in hist[1:]] or [m.value for m in hist]
        if vals:
            parts.append(f"{what} {sum(vals) / len(vals):.2f} s")
    if not parts:
        return None
    return "speed per step (after the first): " + ", ".join(parts)


def execute(cfg, launch: Launch, write_data, quiet: tuple[str, ...] = ("prompt file",)) -> None:
    """Check the context, write the job's data file (`write_data()` says what it wrote), print the command and
    run it (blocking); a failure stops the run with the job's exit code. Input warnings that start with one of
    `quiet` are not printed (the prompt file: the launch writes it next)."""
    problem = context_problem(cfg)
    if problem:
        raise ValueError(f"config: {problem}")
    for w in input_warnings(cfg, launch):
        if not w.startswith(quiet):
            print(f"WARNING: {w}", flush=True)
    print(write_data())
    print("\n".join(readable_runtime_env(launch)))
    print(short_env(launch, launch.shell(multiline=True)), flush=True)
    env = {**os.environ, **launch.env} if launch.launcher == "local" else dict(os.environ)
    cmd = launch.command()
    if launch.launcher == "local" and cmd[0] == "python":  # the driver runs in this interpreter's environment
        cmd = [sys.executable, *cmd[1:]]
    rc = subprocess.call(cmd, env=env, cwd=str(launch.working_dir))
    if rc != 0:
        raise SystemExit(rc)
