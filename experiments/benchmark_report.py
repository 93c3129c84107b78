"""The Markdown report of experiments/benchmark.py (results/benchmarks.md): the setting, the machine and its load,
the per-phase tables, the headline ratios against their targets, and the notes on what is compared."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.benchmark_systems import PHASES

# the goals the headline ratios are held against (the issues that set them: docs/performance.md)
TARGETS = {"trapo_over_grpo": 1.10, "ours_over_trl": 0.75, "ours_over_trl_real": 0.6}


def write_report(path: Path, results: dict, head: dict, args) -> None:
    peak = results["matmul_peak_gflops"]
    v, mach = results["versions"], results["machine"]
    load0, load1 = results["load_before"], results["load_after"]
    # the benchmark's own threads raise the load average it reads afterwards: only load beyond them is other jobs
    shared = load0[0] >= 0.5 or load1[0] >= args.threads + 0.5
    lines = [
        "# Benchmarks: one RL step, our local engine vs TRL's GRPOTrainer",
        "",
        "Produced by `experiments/benchmark.py`; regenerate with the command below.",
        "",
        f"- command: `{results['command']}`",
        f"- date: {results['date']}, git commit {results['commit']}",
        f"- machine: {mach['cpu']}, {mach['cores']} cores; torch threads: {args.threads}",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load0)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load1)}"
        + (" — **other work was running, or had just ended** (the 1-minute load average lags): absolute times "
           "may be inflated and noisy; the ratios are from interleaved steps (A B C C B A) and medians."
           if shared else " — the machine was otherwise idle."),
        f"- versions: python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, "
        f"accelerate {v['accelerate']}, math-verify {v['math-verify']}",
        f"- fp32 matmul peak (1024², best of 5, {args.threads} thread(s)): **{peak:.0f} GFLOP/s**",
        f"- wall time of the whole benchmark: {results['wall_s']:.0f} s",
        "",
        "## Result",
        "",
        "```json",
        json.dumps(head),
        "```",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for k, goal in TARGETS.items():
        val = head.get(k)
        lines.append(f"| `{k}` | {val if val is not None else '—'} | ≤ {goal} | "
                     f"{'yes' if val is not None and val <= goal else 'no'} |")
    real = results["settings"].get("real", {}).get("systems", {})
    if "ours_trapo" in real and "ours_grpo" in real:
        val = round(real["ours_trapo"]["step_s"] / real["ours_grpo"]["step_s"], 3)
        lines.append(f"| TRAPO / GRPO on `real` (not in the JSON line) | {val} | ≤ {TARGETS['trapo_over_grpo']} | "
                     f"{'yes' if val <= TARGETS['trapo_over_grpo'] else 'no'} |")
    for key, values in (results.get("fixed_ratios") or {}).items():
        if len(values) > 1:
            lines += ["", f"`{key}` is the median of its ratio on `fixed` in {len(values)} processes (this one first, "
                      f"then fresh ones timing the systems on `fixed` alone): {', '.join(str(r) for r in values)}. "
                      "A process's ratio carries a bias of its own, wider than the spread of its steps."]
    lines += ["", "`trapo_over_grpo` in the JSON line is measured on `fixed`, where a random model makes TRAPO guide "
              "every prompt to the last level (its largest extra work); the row above is the embedded default, "
              "where guidance follows the model's real rewards. Engine design and the measured effect of each "
              "change: [docs/performance.md](../docs/performance.md)."]
    for setting, res in results["settings"].items():
        w = res["work"]
        lines += ["", f"## Setting `{setting}`: {res['params'] / 1e6:.2f}M parameters, {w['prompts']} prompts × "
                  f"{w['group']} samples, max {w['max_new_tokens']} new tokens, EOS {'on' if w['eos'] else 'off'}, "
                  f"micro-batch {w['micro_batch']}", "",
                  "Median seconds per step and per phase over the measured steps:", "",
                  "| system | step | " + " | ".join(PHASES) + " | steps (s) |",
                  "|---|---" + "|---" * len(PHASES) + "|---|"]
        for name, s in res["systems"].items():
            lines.append(f"| {name} | **{s['step_s']:.3f}** | " + " | ".join(f"{s['phases_s'][p]:.3f}" for p in PHASES)
                         + f" | {', '.join(str(x) for x in s['steps_s'])} |")
        lines += ["", "Work done and rate achieved (GFLOP/s; the peak above is the limit):", "",
                  "| system | samples/step | mean prompt(+prefix) tokens | mean completion tokens | generation | update | "
                  "generation, work done | update, work done |", "|---|---|---|---|---|---|---|---|"]
        for name, s in res["systems"].items():
            done_g, done_u = s.get("gen_gflops_done"), s.get("upd_gflops_done")
            lines.append(f"| {name} | {s['samples_per_step']:.0f} | {s['mean_prompt_tokens']:.1f} | "
                         f"{s['mean_completion_tokens']:.1f} | {s['gen_gflops_task']:.1f} | {s['upd_gflops_task']:.1f} | "
                         f"{f'{done_g:.1f} ({done_g / peak:.0%})' if done_g else '—'} | "
                         f"{f'{done_u:.1f} ({done_u / peak:.0%})' if done_u else '—'} |")
    rounds = [(setting, res["systems"]["ours_trapo"]["rounds"]) for setting, res in results["settings"].items()
              if res["systems"].get("ours_trapo", {}).get("rounds")]
    if rounds:
        lines += ["", "## Where TRAPO's extra time goes: generation per micro-group round (ours_trapo)", "",
                  "TRAPO draws a prompt's 8 samples in 4 rounds (4, 2, 1, 1), one after another: a round's prefixes "
                  "depend on the rewards of the rounds before (trapo/rollout.py). Each round is one batch across all "
                  "prompts; a guided sample generates what its prefix leaves of the response (prefix + completion "
                  "<= max new tokens, as in the authors' code). Medians over the measured steps (a round whose "
                  "prefixes all fill the response, or are the whole solution, generates nothing and is not "
                  "listed):", "",
                  "| setting | round | rows | distinct inputs | decode steps | seconds | ms per decode step |",
                  "|---|---|---|---|---|---|---|"]
        for setting, rs in rounds:
            for i, r in enumerate(rs):
                per = 1e3 * r["seconds"] / max(r["decode_steps"], 1)
                lines.append(f"| {setting} | {i} | {r['rows']:.0f} | {r['inputs']:.0f} | {r['decode_steps']:.0f} | "
                             f"{r['seconds']:.3f} | {per:.1f} |")
        lines += ["", "The rounds after the first have few rows (32, 16, a few) and each runs as many decode steps "
                  "as its longest sample; a decode step does not cost in proportion to its rows (per row, a 16-row "
                  "step costs 2–3× a 128-row one here: the forward's fixed cost of Python and op dispatch, ~1.5–2 ms "
                  "for the small model, and small matrix products that run far below the peak). GRPO draws its 8 "
                  "samples in one round of 128 rows. The update trains on as many tokens as GRPO's: a guided "
                  "sample's prefix takes the place of completion tokens. TRAPO's rounds are sequential by design; "
                  "what the engine does about it and what is left: docs/performance.md."]
    lines += ["", "## Grading throughput", ""]
    gr = results.get("grading", {})
    if gr:
        lines += [f"{args.grade_items} distinct (response, gold) pairs, half right (boxed integers, fractions, "
                  f"decimals): evaluation/grader.py with {args.threads} worker(s) (pool already started; start-up "
                  f"{gr['grader_pool_start_s']:.2f} s): **{gr['grader']:.0f} items/s** (verdicts right: "
                  f"{gr['grader_accuracy']:.0%}); math-verify alone (parse + verify in-process, no time limit): "
                  f"**{gr['math_verify']:.0f} items/s** (right: {gr['math_verify_accuracy']:.0%})."]
    lines += ["", "## Memory", ""]
    rss = results.get("rss_probe")
    if rss and "failed" in rss:
        lines.append(f"The RSS probe (our steps alone in a fresh process) failed ({rss['failed']}): not measured.")
    elif rss:
        lines += [f"Our GRPO and TRAPO steps on the default run's setting, alone in a fresh process: peak RSS "
                  f"**{rss['peak_rss_mb']:.0f} MiB** (after imports {rss['after_imports_mb']:.0f} MiB, after model "
                  f"and data {rss['after_model_and_data_mb']:.0f} MiB). Full-vocabulary logits exist for one micro-batch "
                  f"at a time: at most {rss['largest_logits_mb']:.2f} MiB."]
    lines.append(f"This benchmark process (all systems, TRL included): peak RSS {results['peak_rss_mb']:.0f} MiB.")
    lines += ["", "## Notes", "", *NOTES, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


NOTES = [
    "- Identical work: both sides get the same model weights (a copy each), prompts, reward function "
    "(exact match of the last `\\boxed{}`), group size, micro-batch, max new tokens, temperature 1, LR (1e-6, "
    "so that the policy does not drift between blocks), AdamW and grad-norm clip 1.0. TRL: `loss_type=\"dr_grpo\"`, "
    "`beta=0` (no reference model), `num_iterations=1`, `scale_rewards=\"none\"`, fp32 (`bf16=False`), "
    "`gradient_checkpointing=False` (TRL's defaults are bf16 and checkpointing on), `top_k=0`, `top_p=1`. "
    "In `fixed`, EOS is disabled: ours with `stop_at_eos=False`, TRL with `min_new_tokens = max_new_tokens`.",
    "- Phases: `generation` is sampling only; `rollout_other` is decoding, rewards bookkeeping, advantages and "
    "(TRL) tokenization and padding; `logprobs` is the forward pass and loss; `backward`; `optimizer` is "
    "grad-norm clip + AdamW.",
    "- GFLOP/s columns: *generation*/*update* divide the FLOPs of the task, counted per sample as if each ran "
    "alone (2 FLOPs per weight per token + attention; update = 3 × forward), by the phase's time, for every "
    "system alike. *work done* counts what our engine actually computes after running each distinct prompt "
    "once (prefill and update): that rate is the one to compare with the matmul peak.",
    "- TRAPO in `fixed`: the random model never earns a reward, so every prompt gets all three guided rounds "
    "(4, 2, 1, 1 samples; prefixes of 20%, 50% and 100% of the reference solution, cut to the 64-token "
    "response): the most rounds TRAPO adds.",
]
