"""Time one RL step of our GRPO and TRAPO (local engine) and of TRL's GRPOTrainer on the same work, in one process.

    python experiments/benchmark.py --threads 2             # full run (a few minutes), writes results/benchmarks.md
    python experiments/benchmark.py --quick --out ''        # seconds of work, nothing written (tests)

Two settings, each timed for ours_grpo, ours_trapo and trl_grpo:

- fixed: a 3.0M-parameter Qwen2-style model with random weights built here from a config, 16 prompts x 8
  samples, 32 prompt + 64 new tokens, EOS disabled: every system does exactly the same work. TRAPO's reward
  (exact match of \\boxed{}) is always 0 for a random model, so every prompt climbs to the last guidance level:
  the most TRAPO can add over GRPO.
- real: the embedded default (preset=mini): its tiny pretrained model (trapo.models.loading), synthetic
  problems (trapo.data.synthetic), EOS on, the preset's max_new_tokens.

Warm-up steps are dropped and the systems are interleaved A B C C B A (the first steps in a process run slow).
The step time of a system is the median of its measured steps. A process's TRAPO/GRPO ratio carries a bias of its
own (each system's copy of the model lands elsewhere in memory; on this VM one process gave 0.89 and another 1.24
for the same code), so the two ratios on `fixed` (`trapo_over_grpo`, `ours_over_trl`) are medians over
`--ratio-processes` processes: this one and fresh ones that time the systems on `fixed` alone. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from experiments.benchmark_measure import (ModelShape, grading_throughput, matmul_peak_gflops,  # noqa: E402
                                           peak_rss_mb, shared_flops, task_flops)
from experiments.benchmark_report import write_report  # noqa: E402
from experiments.benchmark_systems import PHASES, OursSystem, Work, interleaved, make_trl_system  # noqa: E402
from trapo.rollout import tokenize_prompt  # noqa: E402


# the fixed setting (the issue's): model shape and work; --quick shrinks both
FIXED_MODEL = dict(hidden_size=256, intermediate_size=640, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=4)
QUICK_MODEL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=2)
# (the group size is the run config's train.group_size, as in the real setting)
FIXED_WORK = dict(n_prompts=16, prompt_tokens=32, new_tokens=64, micro_batch=32)
QUICK_WORK = dict(n_prompts=2, prompt_tokens=16, new_tokens=12, micro_batch=8)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="measured steps per system and setting (default 6; quick 2)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up steps per system, dropped")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (and grader workers)")
    ap.add_argument("--quick", action="store_true", help="tiny model and work: seconds, for tests")
    ap.add_argument("--settings", default="fixed,real", help="comma list of: fixed, real")
    ap.add_argument("--no-trl", action="store_true", help="time our engine only (TRL columns left empty)")
    ap.add_argument("--grade-items", type=int, default=None, help="items for the grading throughput (default 400)")
    ap.add_argument("--rss-probe", action=argparse.BooleanOptionalAction, default=None,
                    help="measure peak RSS of the default run's steps in a fresh process (default: on unless --quick)")
    ap.add_argument("--out", default="results/benchmarks.md", help="Markdown report ('' = none)")
    ap.add_argument("--ratio-processes", type=int, default=None,
                    help="processes whose ratios on `fixed` give the headline's medians (default 3; quick 1)")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 6)
    args.grade_items = args.grade_items if args.grade_items is not None else (40 if args.quick else 400)
    args.rss_probe = (not args.quick) if args.rss_probe is None else args.rss_probe
    args.ratio_processes = args.ratio_processes if args.ratio_processes is not None else (1 if args.quick else 3)
    if args.ratio_processes < 1:
        ap.error(f"--ratio-processes must be >= 1, got {args.ratio_processes}")
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------ set-up
def compose(quick: bool, *overrides: str):
    """The project's Hydra config: preset=mini (the embedded default), preset=smoke for --quick."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=[f"preset={'smoke' if quick else 'mini'}", *overrides])


def methods(quick: bool) -> dict:
    """name -> (method config, RL schedule) for our GRPO and TRAPO, exactly as the trainer builds them."""
    from trapo.guidance import rl_schedule

    out = {}
    for name in ("grpo", "trapo"):
        cfg = compose(quick, f"method={name}")
        out[name] = (cfg.method, rl_schedule(cfg))
    return out


def fixed_setting(quick: bool, n_batches: int):
    """The random-weight Qwen2-style model and its fixed-length work (prompts cut from synthetic questions)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trapo.data import synthetic
    from trapo.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    arch = QUICK_MODEL if quick else FIXED_MODEL
    w = QUICK_WORK if quick else FIXED_WORK
    cfg = Qwen2Config(vocab_size=len(tok), max_position_embeddings=512, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, **arch)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).float().eval()
    problems = synthetic.make_split(w["n_prompts"] * n_batches, 3, 4, seed=7)
    texts = [p.question[: w["prompt_tokens"]] for p in problems]
    prompts = [tokenize_prompt(tok, t, p.base_solution, p.answer) for t, p in zip(texts, problems)]
    assert all(len(p.prompt_ids) == w["prompt_tokens"] for p in prompts), "one token per character"
    work = Work(prompts, [p.answer for p in problems], texts, n_prompts=w["n_prompts"],
                group_size=int(compose(quick).train.group_size), max_new_tokens=w["new_tokens"], stop_at_eos=False,
                micro_batch=w["micro_batch"])
    return model, tok, work


def real_setting(quick: bool, n_batches: int):
    """The embedded default: the tiny pretrained model and synthetic training problems, EOS on."""
    from transformers.utils import logging as hf_logging

    from trapo.data.loading import load_dataset
    from trapo.models.loading import load_model_and_tokenizer
    from evaluation.prompts import build_prompt

    cfg = compose(quick)
    hf_logging.disable_progress_bar()
    model, tok, template = load_model_and_tokenizer(cfg.model, device="cpu")
    items = load_dataset(cfg.data).train[: int(cfg.train.prompts_per_step) * n_batches]
    texts = [build_prompt(it.question, tok, template) for it in items]
    prompts = [tokenize_prompt(tok, t, it.solution, it.answer) for t, it in zip(texts, items)]
    n_prompts = int(cfg.train.prompts_per_step)
    work = Work(prompts, [it.answer for it in items], texts, n_prompts=n_prompts,
                group_size=int(cfg.train.group_size), max_new_tokens=int(cfg.rollout.max_new_tokens),
                stop_at_eos=True, temperature=float(cfg.rollout.temperature),
                micro_batch=int(cfg.train.micro_batch_size))
    return model, tok, work


def build_systems(setting: str, quick: bool, n_batches: int, with_trl: bool):
    from trapo.rewards import BoxedExactMatch

    model, tok, work = (fixed_setting if setting == "fixed" else real_setting)(quick, n_batches)
    reward = BoxedExactMatch()  # data.reward=exact of the embedded default, for every system
    systems = [OursSystem(f"ours_{name}", model, tok, work, m, sched, reward)
               for name, (m, sched) in methods(quick).items()]
    if with_trl:
        systems.append(make_trl_system("trl_grpo", model, tok, work, reward, scale_by_std=False,
                                       min_new_tokens=None if work.stop_at_eos else work.max_new_tokens))
    return model, work, systems


# ------------------------------------------------------------------------------------------------ summary
def summarize(records, shape: ModelShape) -> dict:
    """Median step and phases, mean lengths and FLOP rates of one system's measured steps."""
    med = {p: statistics.median(r.seconds[p] for r in records) for p in ("step", *PHASES)}
    gen_f, upd_f = zip(*(task_flops(shape, r.lengths) for r in records))
    gen_s = sum(r.seconds["generation"] for r in records)
    upd_s = sum(r.seconds["logprobs"] + r.seconds["backward"] + r.seconds["optimizer"] for r in records)
    n = sum(len(r.lengths) for r in records)
    out = {
        "step_s": med["step"], "phases_s": {p: med[p] for p in PHASES},
        "steps_s": [round(r.seconds["step"], 3) for r in records],
        "mean_prompt_tokens": sum(p + k for r in records for p, k, _ in r.lengths) / n,
        "mean_completion_tokens": sum(c for r in records for *_, c in r.lengths) / n,
        "samples_per_step": n / len(records),
        "gen_gflops_task": sum(gen_f) / gen_s / 1e9, "upd_gflops_task": sum(upd_f) / upd_s / 1e9,
    }
    if any(len(r.rounds) > 1 for r in records):  # TRAPO: generation per micro-group round
        out["rounds"] = [{k: statistics.median(r.rounds[i][k] for r in records if len(r.rounds) > i)
                          for k in ("seconds", "rows", "inputs", "decode_steps")} | {"steps_with_it": n}
                         for i in range(max(len(r.rounds) for r in records))
                         for n in [sum(len(r.rounds) > i for r in records)]]
    if records[0].samples:  # ours: the work our engine computes once shared prompts are run once
        sg, su = zip(*(shared_flops(shape, r.samples) for r in records))
        out["gen_gflops_done"], out["upd_gflops_done"] = sum(sg) / gen_s / 1e9, sum(su) / upd_s / 1e9
    return out


def run_setting(setting: str, args) -> dict:
    n_batches = args.warmup + args.steps
    t0 = time.perf_counter()
    model, work, systems = build_systems(setting, args.quick, n_batches, with_trl=not args.no_trl)
    shape = ModelShape.of(model)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{setting}] {n_params / 1e6:.2f}M parameters, {work.n_prompts} prompts x {work.group_size} samples, "
        f"max {work.max_new_tokens} new tokens, EOS {'on' if work.stop_at_eos else 'off'} "
        f"(set-up {time.perf_counter() - t0:.1f} s)")
    records = interleaved(systems, args.steps, args.warmup, log)
    summary = {name: summarize(recs, shape) for name, recs in records.items()}
    return {"params": n_params, "work": {"prompts": work.n_prompts, "group": work.group_size,
                                         "max_new_tokens": work.max_new_tokens, "eos": work.stop_at_eos,
                                         "micro_batch": work.micro_batch},
            "systems": summary}


def child_json(cmd: list[str]) -> tuple[dict | None, subprocess.CompletedProcess]:
    """Run a fresh process of this script; its last stdout line as JSON, or None when it failed (a failed child
    loses its own numbers only, not the measurements made before it)."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    try:
        data = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (IndexError, ValueError):
        data = None
    return (data if isinstance(data, dict) else None), out


def child_failed(what: str, out: subprocess.CompletedProcess, then: str) -> None:
    log(f"{what} failed (exit {out.returncode}); {then}:\n" + (out.stderr or out.stdout)[-2000:])


def rss_probe(args) -> dict:
    """Peak RSS of our GRPO and TRAPO steps on the default run's setting, alone in a fresh process."""
    cmd = [sys.executable, __file__, "--rss-child", "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    probe, out = child_json(cmd)
    if probe is None or "peak_rss_mb" not in probe:
        child_failed("RSS probe", out, "the report says so")
        return {"failed": f"exit {out.returncode}"}
    return probe


FIXED_RATIOS = {"trapo_over_grpo": ("ours_trapo", "ours_grpo"), "ours_over_trl": ("ours_grpo", "trl_grpo")}


def fixed_ratios(args, systems: dict) -> dict[str, list[float]]:
    """The headline's ratios on `fixed` (FIXED_RATIOS) in this process and in `--ratio-processes` - 1 fresh ones."""
    ratios = {k: [round(systems[a]["step_s"] / systems[b]["step_s"], 3)]
              for k, (a, b) in FIXED_RATIOS.items() if a in systems and b in systems}
    cmd = [sys.executable, __file__, "--settings", "fixed", "--grade-items", "0", "--no-rss-probe", "--out", "",
           "--ratio-processes", "1", "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads)] + (["--quick"] if args.quick else []) + (["--no-trl"] if args.no_trl else [])
    for i in range(args.ratio_processes - 1):
        head, out = child_json(cmd)
        try:
            values = {k: float(head[k]) for k in ratios} if head else None
        except (KeyError, TypeError, ValueError):
            values = None
        if values is None:
            child_failed(f"[fixed] fresh process {i + 1}", out, "its ratios are left out")
            continue
        for k, v in values.items():
            ratios[k].append(v)
        log(f"[fixed] fresh process {i + 1}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    return ratios


def rss_child(args) -> None:
    """(--rss-child) two steps of each of our methods on the real setting; prints peak RSS as JSON."""
    before = peak_rss_mb()
    _, work, systems = build_systems("real", args.quick, 2, with_trl=False)
    loaded = peak_rss_mb()
    for s in systems:
        s.run(2)
    mb = work.micro_batch
    width = work.max_new_tokens + max(len(p.solution_ids) for p in work.prompts)
    logits_mb = mb * width * systems[0].engine.model.config.vocab_size * 4 / 2**20
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1), "after_imports_mb": round(before, 1),
                      "after_model_and_data_mb": round(loaded, 1), "largest_logits_mb": round(logits_mb, 2)}))


# ------------------------------------------------------------------------------------------------ report
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "accelerate", "math-verify"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict:
    from experiments.report.readme import machine_info  # the same description results/*/README.md gives

    info = machine_info()
    return {"cpu": info["cpu"] or "unknown", "cores": info["cores"]}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (+ uncommitted changes in the tree)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def headline(results: dict) -> dict:
    """The final JSON line."""
    def step(setting, name):
        return results["settings"].get(setting, {}).get("systems", {}).get(name, {}).get("step_s")

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    g, t, trl = step("fixed", "ours_grpo"), step("fixed", "ours_trapo"), step("fixed", "trl_grpo")
    grading = results.get("grading", {})
    ratios = results.get("fixed_ratios", {})

    def fixed(key):  # the median over the processes that measured it (main() fills fixed_ratios with `fixed`)
        return round(statistics.median(ratios[key]), 3) if ratios.get(key) else None

    return {
        "ours_grpo_step_s": round(g, 3) if g else None,
        "ours_trapo_step_s": round(t, 3) if t else None,
        "trl_grpo_step_s": round(trl, 3) if trl else None,
        "trapo_over_grpo": fixed("trapo_over_grpo"),
        "ours_over_trl": fixed("ours_over_trl"),
        "ours_over_trl_real": ratio(step("real", "ours_grpo"), step("real", "trl_grpo")),
        "grade_items_per_s": {k: round(grading[k], 1) for k in ("grader", "math_verify") if k in grading},
    }


def print_tables(results: dict) -> None:
    peak = results["matmul_peak_gflops"]
    for setting, res in results["settings"].items():
        log(f"\n[{setting}] median seconds per step (phases), achieved GFLOP/s (peak {peak:.0f})")
        log(f"{'system':12s} {'step':>6s} " + " ".join(f"{p[:9]:>9s}" for p in PHASES)
            + "  gen GF/s  upd GF/s  resp.len")
        for name, s in res["systems"].items():
            log(f"{name:12s} {s['step_s']:6.2f} " + " ".join(f"{s['phases_s'][p]:9.3f}" for p in PHASES)
                + f"  {s['gen_gflops_task']:8.1f}  {s['upd_gflops_task']:8.1f}  {s['mean_completion_tokens']:8.1f}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if args.rss_child:
        rss_child(args)
        return {}
    t_start = time.perf_counter()
    # the model cache only decides where the embedded default's model is built or found; shown for reruns
    env = f"TRAPO_CACHE={shlex.quote(os.environ['TRAPO_CACHE'])} " if os.environ.get("TRAPO_CACHE") else ""
    cli = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results: dict = {"command": f"{env}python experiments/benchmark.py {cli}".strip(),
                     "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
                     "versions": versions(), "machine": machine(), "load_before": list(os.getloadavg()),
                     "settings": {}}
    with_trl = not args.no_trl
    if with_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            log("trl is not installed (pip install -e '.[dev]'): timing our engine only")
            args.no_trl = True
    log(f"threads {args.threads}, load {results['load_before'][0]:.2f}; versions {results['versions']}")
    results["matmul_peak_gflops"] = matmul_peak_gflops()
    log(f"fp32 matmul peak: {results['matmul_peak_gflops']:.0f} GFLOP/s")
    for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
        results["settings"][setting] = run_setting(setting, args)
        if setting == "fixed":
            results["fixed_ratios"] = fixed_ratios(args, results["settings"]["fixed"]["systems"])
    if args.grade_items > 0:
        results["grading"] = grading_throughput(args.grade_items, workers=max(1, args.threads))
        log(f"grading: {results['grading']}")
    if args.rss_probe:
        results["rss_probe"] = rss_probe(args)
        log(f"peak RSS (default run's steps, fresh process): {results['rss_probe']}")
    results["peak_rss_mb"] = peak_rss_mb()
    results["load_after"] = list(os.getloadavg())
    results["wall_s"] = time.perf_counter() - t_start
    print_tables(results)
    head = headline(results)
    if args.out:
        out = Path(args.out)
        write_report(out if out.is_absolute() else ROOT / out, results, head, args)
        log(f"wrote {args.out}")
    print(json.dumps(head), flush=True)
    return head


if __name__ == "__main__":
    main()
