"""preset=paper: the runs on a GPU cluster (OpenRLHF), then experiments/evaluate.py on the five benchmarks.

Each job becomes up to three commands: training (`experiments/run.py` with the paper preset: the OpenRLHF launch of
trapo.engines.openrlhf.launch, or for sft, sft_rl and relift their runner in baselines/), evaluation of the final model
(vLLM, the paper's settings) into `<run dir>/eval/summary.json`, and pass@k on AIME24 into `<run dir>/passk/`.
`dry_run=true` prints them. A job is reused when its run dir has the evaluation summary and a `reproduce.json`
with the job's config hash (the OpenRLHF run's MLflow run is tagged `config_hash` after its launch returns).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.report.plan import ROOT, Job, RunSpec, run_overrides
from experiments.report.store import RunResult, Store, read_history

def script(name: str) -> str:
    """experiments/<name> relative to the working directory (commands run where reproduce.py runs)."""
    return os.path.relpath(ROOT / "experiments" / name)


def extra_overrides(rcfg) -> dict[str, list[str]]:
    return {}  # every method runs on OpenRLHF (sft, sft_rl, relift through baselines/)


@dataclass
class PaperCommands:
    job: Job
    train: str | None  # None for the base model
    model_path: str
    evaluate: str
    passk: str | None
    notes: list[str]


def _evaluate_cmd(rcfg, job: Job, model_args: list[str], out: Path, benchmarks, n_samples, temperature,
                  name: str) -> str:
    ev = rcfg.presets.paper.evaluate
    args = [*model_args, f"backend={ev.backend}", f"benchmarks=[{','.join(benchmarks)}]", f"n_samples={n_samples}",
            f"temperature={temperature}", f"max_new_tokens={ev.max_new_tokens}", f"seed={job.seed}",
            f"output_dir={out}", f"tracking.run_name={name}"]
    if ev.get("data_dir"):
        args.append(f"data_dir={ev.data_dir}")
    return shlex.join(["python", script("evaluate.py"), *args])


def commands(rcfg, job: Job, benchmarks) -> PaperCommands:
    notes: list[str] = []
    spec = RunSpec(job.labels[0], job.method, job.seed, job.overrides)
    name = f"{job.labels[0]}_s{job.seed}"
    if job.kind == "base":
        train, model_args = None, [f"model={job.cfg.model.name}"]
        model_path = str(job.cfg.model.path)
    else:
        ov = [o for o in run_overrides(rcfg, spec) if not o.startswith("progress=")]
        train = shlex.join(["python", script("run.py"), *ov, f"hydra.run.dir={job.run_dir}"])
        from baselines import final_model_dir  # the runners (a report outside trapo/ may import them)

        model_path = final_model_dir(job.cfg, job.run_dir)  # builds, and so validates, the launch(es)
        if job.cfg.engine.name == "openrlhf":
            e = job.cfg.engine
            where = f"Ray job at {e.ray_address}" if e.launcher == "ray_job" else "driver on this machine"
            what = {"sft": "OpenRLHF's SFT trainer", "sft_rl": "OpenRLHF's SFT trainer, then the RL launch from its "
                    "model", "relift": "the RL launch with ReLIFT's SFT step"}.get(job.method, "the RL launch")
            notes.append(f"OpenRLHF ({where}): {what}; the train command with engine.dry_run=true prints every flag")
        else:
            notes.append("local engine: one GPU")
        model_args = ["model=hf", f"model.path={model_path}"]
    ev = rcfg.presets.paper.evaluate
    evaluate = _evaluate_cmd(rcfg, job, model_args, job.run_dir / "eval", benchmarks, ev.n_samples, ev.temperature,
                             name)
    passk = None
    if job.passk and rcfg.passk and rcfg.passk.get("split"):
        p = rcfg.passk
        passk = _evaluate_cmd(rcfg, job, model_args, job.run_dir / "passk", [p.split], int(p.n_samples),
                              p.temperature, name + "_passk")
    return PaperCommands(job, train, model_path, evaluate, passk, notes)


def describe(pc: PaperCommands, status: str) -> str:
    lines = [f"## {pc.job.name} [{status}]  hash {pc.job.hash[:12]}  run dir {pc.job.run_dir}"]
    if pc.train:
        lines.append(f"train:    {pc.train}")
    lines += [f"# {n}" for n in pc.notes]
    lines.append(f"evaluate: {pc.evaluate}")
    if pc.passk:
        lines.append(f"pass@k:   {pc.passk}")
    return "\n".join(lines)


def _summary(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finished(job: Job) -> bool:
    meta = _summary(job.run_dir / "reproduce.json") or {}
    return meta.get("config_hash") == job.hash and meta.get("finished") and (job.run_dir / "eval" / "summary.json").exists()


def result_from_dir(job: Job, status: str, store: Store | None) -> RunResult:
    s = _summary(job.run_dir / "eval" / "summary.json") or {}
    final = {f"eval/{b}/accuracy": float(v["accuracy"]) for b, v in s.items()}
    if final:
        final["eval/avg_accuracy"] = sum(final.values()) / len(final)
    meta = _summary(job.run_dir / "reproduce.json") or {}
    run_id = meta.get("mlflow_run_id")
    history = read_history(job.run_dir, store.client if store else None, run_id) if run_id else None
    passk = None
    p = _summary(job.run_dir / "passk" / "summary.json") or {}
    if p:
        passk = next(iter(p.values()))
    return RunResult(job, status, run_id, job.run_dir, final, history, passk)


def _sh(cmd: str) -> None:
    print(f"$ {cmd}", flush=True)
    rc = subprocess.call(cmd, shell=True)
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {cmd}")


def run(rcfg, pc: PaperCommands, store: Store | None) -> RunResult:
    """Train (blocking: `ray job submit` waits), evaluate, tag the MLflow run, mark the run dir finished."""
    job = pc.job
    job.run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run_id = None
    if pc.train and not (Path(pc.model_path) / "config.json").exists():
        _sh(pc.train)
        if store is not None:
            run = store.started_after(int(t0 * 1000), job.method)
            if run is not None:
                run_id = run.info.run_id
                for k, v in {"config_hash": job.hash, "run_dir": str(job.run_dir.resolve())}.items():
                    store.safe("set_tag", store.client.set_tag, run_id, k, v)
    _sh(pc.evaluate)
    if pc.passk:
        _sh(pc.passk)
    (job.run_dir / "reproduce.json").write_text(json.dumps(
        {"config_hash": job.hash, "labels": job.labels, "method": job.method, "seed": job.seed,
         "mlflow_run_id": run_id, "finished": True, "commands": [c for c in (pc.train, pc.evaluate, pc.passk) if c]},
        indent=2) + "\n")
    res = result_from_dir(job, "trained", store)
    res.seconds = time.time() - t0
    return res
