"""Time one decode step: the model call against trapo.engines.decode_step's direct step, by the number of rows.

    python experiments/benchmark_decode_step.py --threads 2          # the numbers in docs/performance.md
    python experiments/benchmark_decode_step.py --quick              # seconds (tests)

On the benchmark's `fixed` model (experiments/benchmark.py: a 3.0M-parameter Qwen2-style model, random weights):
for each row count, prefill a 32-token prompt per row, then time `--steps` greedy decode steps with each of the two
ways side by side on two caches (which goes first alternates each step), `--repeats` times with fresh prompts. A
way's time is the median of its steps. The logits of the two ways are checked equal bit for bit on every step. The
last line printed is one JSON object: {rows: {"call_ms", "direct_ms", "ratio"}}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def prefill(model, rows: int, prompt_tokens: int, vocab: int, seed: int):
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, prompt_tokens), generator=g)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
    return cache, logits


def paired_steps(model, step_fn, rows: int, steps: int, prompt_tokens: int, vocab: int, seed: int):
    """Seconds of each decode step, {"call": [...], "direct": [...]}, the two ways stepping side by side on two
    caches of the same prompts (which goes first alternates each step, so a slow spell hits both); None when a
    step's logits differ."""
    cache = {"call": prefill(model, rows, prompt_tokens, vocab, seed)}
    cache["direct"] = prefill(model, rows, prompt_tokens, vocab, seed)
    logits = cache["call"][1]
    attn = torch.ones(rows, prompt_tokens + steps, dtype=torch.long)
    pos = torch.full((rows,), prompt_tokens, dtype=torch.long)
    times = {"call": [], "direct": []}
    with torch.no_grad():
        for i in range(steps):
            tok = logits.argmax(-1)
            mask = attn[:, : prompt_tokens + i + 1]
            out = {}
            for name in (("call", "direct") if i % 2 == 0 else ("direct", "call")):
                kv = cache[name][0]
                t0 = time.perf_counter()
                if name == "call":
                    out[name] = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                                      past_key_values=kv, use_cache=True).logits[:, -1]
                else:
                    out[name] = step_fn(tok, mask, pos, kv)
                times[name].append(time.perf_counter() - t0)
            if not torch.equal(out["call"], out["direct"]):
                return None
            logits, pos = out["call"], pos + 1
    return times


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="10,32,64,128", help="comma-separated row counts")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="the benchmark's quick model, 2 row counts, few steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.steps, args.repeats = "4,16", 4, 2
    torch.set_num_threads(args.threads)

    from experiments.benchmark import fixed_setting
    from trapo.engines import decode_step

    model, _, _ = fixed_setting(args.quick, 1)
    step_fn = decode_step.make(model)
    if step_fn is None:
        raise SystemExit(f"{type(model).__name__} has no direct decode step (trapo.engines.decode_step.supported)")
    vocab = model.config.vocab_size
    out = {}
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.threads} threads, "
          f"{args.prompt_tokens}-token prefill, medians of {args.repeats} x {args.steps} paired decode steps")
    print(f"{'rows':>5} {'model call ms':>14} {'direct ms':>10} {'direct/call':>12}")
    for rows in [int(r) for r in args.rows.split(",")]:
        times = {"call": [], "direct": []}
        for rep in range(args.repeats):
            got = paired_steps(model, step_fn, rows, args.steps, args.prompt_tokens, vocab, seed=rep)
            if got is None:
                raise SystemExit(f"{rows} rows: the direct step's logits differ from the model call's")
            for name in times:
                times[name] += got[name]
        call, direct = statistics.median(times["call"]), statistics.median(times["direct"])
        out[rows] = {"call_ms": round(call * 1e3, 3), "direct_ms": round(direct * 1e3, 3),
                     "ratio": round(direct / call, 3)}
        print(f"{rows:>5} {call * 1e3:>14.2f} {direct * 1e3:>10.2f} {direct / call:>12.3f}", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
