"""Cross-check our GRPO against TRL's GRPOTrainer on the embedded default, beside a no-learning control.

Three runs on the same base model, prompts (the trainer's batches, step by step), reward and evaluation:

- `ours`: our trainer, method=grpo, at the configured learning rate;
- `ours_lr0`: the same run at lr = 1e-12, so nothing is learned: what its reward curve does is the batches;
- `trl`: TRL's GRPOTrainer (Dr.GRPO loss, no KL, no entropy bonus), fed the same prompts in the same order.

It prints the training reward of the three side by side (windows of `--window` steps), the mean of the
first and last ten steps, and the evaluation accuracy of each trained model on every split, and writes
them to `--out` (Markdown) and the same path with `.json`.

    python experiments/crosscheck_trl.py                      # the embedded default (preset=mini)
    python experiments/crosscheck_trl.py --seed 1 train.steps=40
    python experiments/crosscheck_trl.py preset=smoke --out /tmp/x.md   # seconds, for tests

`--reuse` takes a report's JSON (as committed in results/): its finished runs are read from it, not run again,
when they were made under this command's config, so a fresh clone adds the TRL run to a report without
repeating ours (`--reuse results/smollm2/crosscheck_trl_s0.json --out results/smollm2/crosscheck_trl_s0.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LR_ZERO = 1e-12  # "lr = 0": every code path runs, AdamW's step is below float resolution


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=["method=grpo", *overrides])


def fingerprint(cfg) -> str:
    """The config a run's result depends on, less train.lr (each run sets its own): a result kept in --work is
    reused only for the same fingerprint (the lr ~ 0 control is reused when only the learning rate or thread count changes)."""
    import hashlib

    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True)
    d["train"].pop("lr", None)
    d["engine"].pop("num_threads", None)  # the update is bitwise the same on any thread count (tests/engine/test_local_engine.py)
    d.pop("progress", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def refuse_other_config(kept: dict, want: str, lr: float, what: str, remedy: str) -> None:
    """Stop when a finished result or a stopped run (kept in --work, or in a --reuse report; `kept` holds its
    fingerprint and lr) was made under another config than this command's; `remedy` says what to do instead."""
    got = (kept.get("fingerprint"), kept.get("lr"))
    if got != (want, lr):
        raise SystemExit(f"{what} was made under another config (fingerprint, lr {got} != {(want, lr)}): {remedy}")


def other_work_folder(delete: str) -> str:
    return f"use another --work folder, or delete {delete} to run it again"


def claim_run_folder(folder: Path, want: str, lr: float) -> None:
    """A stopped run resumes from its checkpoints only under the config it started with."""
    mark = folder / "crosscheck_run.json"
    if mark.exists():
        refuse_other_config(json.loads(mark.read_text()), want, lr, f"{folder}: a stopped run",
                            other_work_folder(str(folder)))
        return
    folder.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps({"fingerprint": want, "lr": lr}))


def first_last(xs: list[float], k: int = 10) -> tuple[float, float]:
    k = max(1, min(k, len(xs) // 2))
    return float(np.mean(xs[:k])), float(np.mean(xs[-k:]))


def run_ours(cfg, lr: float, out_dir: Path, resumable: bool = False) -> dict:
    """Our trainer at `lr`. `resumable`: keep the config's checkpoints and continue from the newest one in
    `out_dir` (a long run on a real LM, stopped and started again); else one pass without checkpoints."""
    from omegaconf import OmegaConf

    from trapo.trainer import Trainer

    cfg = cfg.copy()
    OmegaConf.update(cfg, "train.lr", lr)
    OmegaConf.update(cfg, "checkpoint.save_final", False)
    if not resumable:
        OmegaConf.update(cfg, "resume", "never")
        OmegaConf.update(cfg, "checkpoint.every", 0)
    t0 = time.time()
    final = Trainer(cfg, out_dir).run()
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {"reward": [r["train/reward_mean"] for r in rows], "eval": final, "seconds": time.time() - t0}


def run_trl(cfg, lr: float, out_dir: Path, resumable: bool = False) -> dict:
    """TRL's GRPOTrainer on the trainer's own batches, then our evaluation of the model it trained."""
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from trapo.data.loading import load_dataset
    from trapo.engines.local import LocalEngine
    from trapo.models.loading import resolve_model_path
    from evaluation.prompts import build_prompt
    from trapo.rewards import build_reward
    from evaluation.runner import eval_metrics
    from trapo.trainer import Trainer, seed_everything

    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    t0 = time.time()
    steps, n_prompts, group = int(cfg.train.steps), int(cfg.train.prompts_per_step), int(cfg.train.group_size)
    path = resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    meta = path / "trapo_tiny.json"  # the tiny model's own template; a real LM's chat template is in its tokenizer
    template = cfg.model.prompt_template or (json.loads(meta.read_text())["prompt_template"] if meta.exists() else None)
    data = load_dataset(cfg.data)
    order = Trainer.__new__(Trainer)  # only its batch order: the same prompts, step by step, as ours
    order.cfg, order.data = cfg, data
    indices = [i for s in range(steps) for i in order._batch_indices(s)]
    rows = {"prompt": [build_prompt(data.train[i].question, tok, template) for i in indices],
            "gold": [data.train[i].answer for i in indices]}
    reward_fn = build_reward(cfg.data.reward)
    rewards: list[float] = []

    def reward(completions, gold, **kwargs):
        r = reward_fn(completions, gold)
        rewards.extend(r)
        return r

    seed_everything(int(cfg.seed))
    args = GRPOConfig(
        output_dir=str(out_dir), seed=int(cfg.seed), use_cpu=not torch.cuda.is_available(),
        bf16=False, gradient_checkpointing=False,
        num_generations=group, per_device_train_batch_size=group * n_prompts // max(1, n_prompts // 2),
        gradient_accumulation_steps=max(1, n_prompts // 2), num_iterations=1, shuffle_dataset=False,
        loss_type="dr_grpo", scale_rewards="none", beta=0.0, learning_rate=lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=float(cfg.train.weight_decay), max_grad_norm=float(cfg.train.grad_clip),
        optim="adamw_torch", max_completion_length=int(cfg.rollout.max_new_tokens),
        temperature=float(cfg.rollout.temperature), top_p=1.0, top_k=0,
        logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=not cfg.progress,
        log_completions=False, dataloader_num_workers=0, remove_unused_columns=False, max_steps=steps,
    )
    per_step = n_prompts * group

    class StepLine(transformers.TrainerCallback):
        """One line a step (TRL's own logging is off): a run of hours shows where it is."""

        def on_step_end(self, args, state, control, **kwargs):
            last = rewards[(state.global_step - 1) * per_step:state.global_step * per_step]
            print(f"[trl] step {state.global_step}/{steps}: reward {np.mean(last) if last else float('nan'):.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_dict(rows),
                          processing_class=tok, callbacks=[StepLine()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    curve = [float(np.mean(rewards[s * per_step:(s + 1) * per_step])) for s in range(len(rewards) // per_step)]

    from evaluation.grader import Grader
    from evaluation.runner import evaluate_items
    from trapo.engines.backend import EngineBackend

    engine = LocalEngine(trainer.model.eval(), tok, lr=0.0, device="cpu" if not torch.cuda.is_available() else "cuda")
    backend, grader, ev = EngineBackend(engine, template, int(cfg.eval.batch_size)), Grader(progress=False), cfg.eval
    results = {}
    try:
        for name, items in [("valid", data.valid), *data.eval_splits.items()]:
            if items:
                results[name] = evaluate_items(items, backend, grader, n_samples=int(ev.n_samples),
                                               temperature=float(ev.temperature),
                                               max_new_tokens=int(ev.max_new_tokens), seed=int(cfg.seed), name=name)
    finally:
        grader.close()
    final = eval_metrics(results)
    return {"reward": curve, "eval": final, "seconds": time.time() - t0}


def split_sizes(cfg) -> dict[str, int]:
    """Problems per evaluation split (valid included), for the intervals."""
    from trapo.data.loading import load_dataset

    data = load_dataset(cfg.data)
    return {"valid": len(data.valid), **{k: len(v) for k, v in data.eval_splits.items()}}


def plot(results: dict[str, dict], path: Path, title: str, smooth: int = 5) -> None:
    """The training reward of each run, step by step and as a moving mean of `smooth` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, r in results.items():
        y = np.asarray(r["reward"], dtype=float)
        x = np.arange(1, len(y) + 1)
        line, = ax.plot(x, y, alpha=0.25)
        k = min(smooth, len(y))
        if k:
            ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), color=line.get_color(), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training reward (unguided samples)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paired_difference(xs, base) -> tuple[float, float, float]:
    """Mean of xs - base over paired steps, with a 95% t interval over the steps."""
    from evaluation.metrics import t_interval

    return t_interval(np.asarray(xs, dtype=float) - np.asarray(base, dtype=float))


def paired_lines(results: dict[str, dict], window: int, base: str = "ours_lr0") -> list[str]:
    """Each run's training reward minus the lr ~ 0 control's, step by step: both draw the same prompts at every
    step, so the difference removes how hard each step's batch is (the noise that dominates a 4-prompt step)."""
    if base not in results:
        return []
    others = [n for n in results if n != base]
    if not others:
        return []
    ref = results[base]["reward"]
    steps = len(ref)
    lines = ["", f"## Against the lr ~ 0 control on the same prompts (`{base}`)", "",
             "Per-step training reward minus the control's, mean by window of steps [95% t interval over the "
             "window's steps]:", "", "| steps | " + " | ".join(f"{n} - {base}" for n in others) + " |",
             "|---|" + "---|" * len(others)]
    spans = [(a, min(a + window, steps), "") for a in range(0, steps, window)]
    spans += [(steps // 2, steps, " (second half)"), (0, steps, " (all)")]
    for a, b, what in spans:
        cells = []
        for n in others:
            xs = results[n]["reward"][a:b]
            if len(xs) < b - a or not xs:
                cells.append("")
                continue
            m, lo, hi = paired_difference(xs, ref[a:b])
            cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {a + 1}-{b}{what} | " + " | ".join(cells) + " |")
    return lines


def report(results: dict[str, dict], cfg, window: int, command: str) -> str:
    from evaluation.metrics import proportion_ci

    names = list(results)
    steps = max(len(r["reward"]) for r in results.values())
    lines = ["# Cross-check: our GRPO vs TRL's GRPOTrainer vs no learning", "",
             f"Command: `{command}`", "",
             f"Date {time.strftime('%Y-%m-%d %H:%M')}, machine {platform.machine()} ({os.cpu_count()} cores), "
             f"commit {git_commit()}; preset {cfg.preset_name}, seed {cfg.seed}, {steps} steps of "
             f"{cfg.train.prompts_per_step} prompts x {cfg.train.group_size} samples, lr {cfg.train.lr} "
             f"(`ours_lr0`: {LR_ZERO}).", "",
             "## Training reward (mean of unguided samples), by window of steps", "",
             "| steps | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in range(0, steps, window):
        cells = []
        for n in names:
            xs = results[n]["reward"][a:a + window]
            cells.append(f"{np.mean(xs):.3f}" if xs else "")
        lines.append(f"| {a + 1}-{min(a + window, steps)} | " + " | ".join(cells) + " |")
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    fl = {n: first_last(results[n]["reward"]) for n in names}
    lines.append("| first 10 steps | " + " | ".join(f"{fl[n][0]:.3f}" for n in names) + " |")
    lines.append("| last 10 steps | " + " | ".join(f"{fl[n][1]:.3f}" for n in names) + " |")
    lines.append("| rise | " + " | ".join(f"{fl[n][1] - fl[n][0]:+.3f}" for n in names) + " |")
    lines += paired_lines(results, window)
    keys = sorted({k for r in results.values() for k in r["eval"]}, key=lambda k: (k.endswith("avg_accuracy"), k))
    sizes = split_sizes(cfg)
    lines += ["", "## Evaluation accuracy after training (greedy)" if float(cfg.eval.temperature) == 0 else
              "## Evaluation accuracy after training", "",
              "[95% Wilson interval over the split's problems, one sample each]", "",
              "| split | problems | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for k in keys:
        n_items = sizes.get(k.removesuffix("/accuracy").removeprefix("eval/"))  # valid, steps1, ...; not the means
        cells = []
        for n in names:
            acc = results[n]["eval"].get(k, float("nan"))
            ci = proportion_ci(acc, n_items) if n_items and np.isfinite(acc) else None
            cells.append(f"{acc:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        lines.append(f"| {k} | {n_items or ''} | " + " | ".join(cells) + " |")
    lines += ["", "Wall time as run (s; other jobs may have shared the machine, so this is not a timing): "
              + ", ".join(f"{n} {results[n]['seconds']:.0f}" for n in names), ""]
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml (preset=smoke, train.steps=40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=10, help="steps per row of the reward table")
    ap.add_argument("--out", default=str(ROOT / "results" / "crosscheck_trl.md"))
    ap.add_argument("--skip", default="", help="comma-separated runs to leave out (ours, ours_lr0, trl)")
    ap.add_argument("--work", default=None,
                    help="keep the runs here (default: a temporary folder, removed after): a finished run's result "
                         "is reused and our runs resume from their checkpoints, so the command can be stopped and "
                         "run again (hours on preset=smollm2)")
    ap.add_argument("--reuse", default=None, metavar="REPORT.json",
                    help="a report's JSON (e.g. results/smollm2/crosscheck_trl_s0.json): its finished runs are "
                         "reused when made under this config (fingerprint and lr), not run again")
    args = ap.parse_args(argv)
    try:
        import trl  # noqa: F401
    except ImportError:
        print("trl is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + str(Path(tempfile.gettempdir()) / "trapo-crosscheck.db"))
    cfg = compose([f"seed={args.seed}", "progress=false", *args.overrides])
    skip = {s for s in args.skip.split(",") if s}
    want = fingerprint(cfg)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="trapo-crosscheck-"))
    results: dict[str, dict] = {}
    reported = json.loads(Path(args.reuse).read_text())["runs"] if args.reuse else {}
    try:
        for name, fn, lr in (("ours", run_ours, float(cfg.train.lr)), ("ours_lr0", run_ours, LR_ZERO),
                             ("trl", run_trl, float(cfg.train.lr))):
            if name in skip:
                continue
            done = work / f"{name}.json"
            if name in reported:
                results[name] = reported[name]
                refuse_other_config(results[name], want, lr, f"{args.reuse}: run {name}",
                                    f"leave out --reuse, or --skip {name}")
                print(f"[crosscheck] {name}: finished before, read from {args.reuse}", flush=True)
            elif args.work and done.exists():
                results[name] = json.loads(done.read_text())
                refuse_other_config(results[name], want, lr, f"{done}: a run",
                                    other_work_folder(f"{done} and {work / name}"))
                print(f"[crosscheck] {name}: finished before, read from {done}", flush=True)
            else:
                if args.work:
                    claim_run_folder(work / name, want, lr)
                print(f"[crosscheck] {name}: {cfg.train.steps} steps at lr {lr:g} ...", flush=True)
                results[name] = {**fn(cfg, lr, work / name, resumable=bool(args.work)), "fingerprint": want, "lr": lr}
                if args.work:
                    done.write_text(json.dumps(results[name]))
            a, b = first_last(results[name]["reward"])
            print(f"[crosscheck] {name}: reward first 10 {a:.3f} -> last 10 {b:.3f}; "
                  f"eval avg {results[name]['eval'].get('eval/avg_accuracy', float('nan')):.3f} "
                  f"({results[name]['seconds']:.0f} s)", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    command = "python experiments/crosscheck_trl.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(results, cfg, args.window, command.strip())
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    plot(results, out.with_suffix(".png"), f"preset {cfg.preset_name}, seed {cfg.seed}: {', '.join(results)}")
    out.with_suffix(".json").write_text(json.dumps({"config": {"preset": cfg.preset_name, "seed": int(cfg.seed),
                                                               "lr": float(cfg.train.lr), "steps": int(cfg.train.steps)},
                                                    "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
