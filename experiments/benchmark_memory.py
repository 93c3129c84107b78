"""Peak memory and time of the local engine's update against its token budget (train.micro_batch_tokens).

    python experiments/benchmark_memory.py --model smollm2 --budgets 1024,2048,4096,none
    python experiments/benchmark_memory.py --model tiny --quick          # seconds (tests)

Each row is one fresh process (peak RSS only ever grows) that loads the model, builds one step's samples (prompts x
samples, fixed lengths, random tokens and advantages, half of them guided: expert prefix + completion, TrSFT and
the entropy bonus on) and runs `--steps` updates (`LocalEngine.train_step`, the trainer's update). It reports the
process's peak RSS (ru_maxrss, what `/usr/bin/time -v` prints as "Maximum resident set size"), the RSS after
loading the model and the median seconds per update. `--engine-root DIR` runs the rows with the trapo of another
checkout (e.g. a `git worktree` of an older commit: the update before chunking), passing only the engine
settings it knows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="conf/model/<name>.yaml (tiny, smollm2, ...)")
    ap.add_argument("--preset", default="mini", help="conf/preset/<name>.yaml (the tiny model's size: mini, smoke)")
    ap.add_argument("--budgets", default="512,1024,2048,4096,none",
                    help="comma list of train.micro_batch_tokens values ('none': micro_batch_size alone)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt")
    ap.add_argument("--prompt-tokens", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=128, help="own tokens per sample (prefix + completion)")
    ap.add_argument("--micro-batch-size", type=int, default=32, help="train.micro_batch_size (sequence cap)")
    ap.add_argument("--chunk", type=int, default=None, help="train.logits_chunk_tokens (default: the config's)")
    ap.add_argument("--checkpointing", default="false", help="comma list of train.gradient_checkpointing: false,true")
    ap.add_argument("--steps", type=int, default=2, help="updates per row (the first also pays for allocations)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="smoke's tiny model, 2 prompts x 2 samples x 16 tokens, 1 step")
    ap.add_argument("--engine-root", default=None, help="import trapo from this checkout instead (before/after)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.preset, args.prompts, args.samples, args.prompt_tokens, args.new_tokens = \
            "tiny", "smoke", 2, 2, 16, 16
        args.steps, args.budgets = 1, "16,none"
    return args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def compose(model: str, preset: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=[f"model={model}", f"preset={preset}"])


def make_samples(args, vocab: int, special: set[int]):
    """prompts x samples with fixed lengths: every other sample guided (half its own tokens an expert prefix)."""
    import torch

    from trapo.rollout import Sample

    gen = torch.Generator().manual_seed(0)
    ok = torch.tensor([t for t in range(vocab) if t not in special])

    def ids(n):
        return ok[torch.randint(len(ok), (n,), generator=gen)].tolist()

    out = []
    for g in range(args.prompts):
        prompt = ids(args.prompt_tokens)
        for j in range(args.samples):
            k = args.new_tokens // 2 if j % 2 else 0
            out.append(Sample(g, int(k > 0), prompt, ids(k), ids(args.new_tokens - k),
                              advantage=float(torch.randn(1, generator=gen))))
    return out


def child(args) -> dict:
    """One row: load, build samples, run the updates; JSON on stdout."""
    if args.engine_root:
        sys.path.insert(0, str(Path(args.engine_root).resolve()))
    import inspect

    import torch

    torch.set_num_threads(args.threads)
    budget, checkpointing = json.loads(args.child)
    from transformers.utils import logging as hf_logging

    from trapo.engines.local import LocalEngine
    from trapo.models.loading import load_model_and_tokenizer

    hf_logging.disable_progress_bar()
    cfg = compose(args.model, args.preset)
    model, tok, _ = load_model_and_tokenizer(cfg.model, device="cpu")
    chunk = int(args.chunk if args.chunk is not None else cfg.train.get("logits_chunk_tokens", 0))
    settings = dict(micro_batch_tokens=budget, logits_chunk_tokens=chunk, gradient_checkpointing=checkpointing)
    known = inspect.signature(LocalEngine).parameters  # an older engine (--engine-root) knows fewer
    engine = LocalEngine(model, tok, lr=1e-6, micro_batch_size=args.micro_batch_size,
                         **{k: v for k, v in settings.items() if k in known})
    special = {t for t in (tok.eos_token_id, tok.pad_token_id, getattr(tok, "bos_token_id", None)) if t is not None}
    samples = make_samples(args, model.config.vocab_size, special)
    loaded = rss_mb()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        engine.train_step(samples, normalizer=float(len(samples) * args.new_tokens), prefix_loss="trsft", alpha=0.1,
                          gamma=0.1, entropy_coef=0.001)
        times.append(time.perf_counter() - t0)
    return {"budget": budget if "micro_batch_tokens" in known else "n/a",
            "checkpointing": checkpointing if "gradient_checkpointing" in known else "n/a",
            "chunk": chunk if "logits_chunk_tokens" in known else 0, "loaded_mb": round(loaded),
            "peak_rss_mb": round(peak_rss_mb()), "update_s": round(statistics.median(times), 2),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "vocab": model.config.vocab_size}


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)), flush=True)
        return []
    budgets = [None if b.strip().lower() == "none" else int(b) for b in args.budgets.split(",") if b.strip()]
    ckpts = [c.strip().lower() == "true" for c in args.checkpointing.split(",") if c.strip()]
    n = args.prompts * args.samples
    print(f"model={args.model}: {args.prompts} prompts x {args.samples} samples, {args.prompt_tokens} prompt + "
          f"{args.new_tokens} own tokens, micro_batch_size {args.micro_batch_size}, {args.threads} threads", flush=True)
    print(f"{'micro_batch_tokens':>18s} {'checkpointing':>13s} {'chunk':>6s} {'loaded MB':>9s} {'peak RSS MB':>11s} "
          f"{'update s':>8s}", flush=True)
    rows = []
    for ck in ckpts:
        for b in budgets:
            base = [a for a in (argv if argv is not None else sys.argv[1:])]
            cmd = [sys.executable, __file__, *base, "--child", json.dumps([b, ck])]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                row = {"budget": b, "checkpointing": ck, "error": f"exit {res.returncode}: "
                       + (res.stderr.strip().splitlines() or ["killed"])[-1]}
                print(f"{str(b):>18s} {str(ck):>13s} {row['error']}", flush=True)
            else:
                row = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"{str(b):>18s} {str(ck):>13s} {row['chunk']:6d} {row['loaded_mb']:9d} {row['peak_rss_mb']:11d} "
                      f"{row['update_s']:8.2f}", flush=True)
            rows.append(row)
    vocab = next((r["vocab"] for r in rows if "vocab" in r), None)
    if vocab:  # what the old update held at once: fp32 logits of one micro-batch, and log-softmax, exp, product
        width = args.new_tokens
        mb = min(args.micro_batch_size, n)
        print(f"before chunking, one micro-batch's fp32 logits alone: {mb} x {width} x {vocab} x 4 B = "
              f"{mb * width * vocab * 4 / 2**20:.0f} MB (x4 with log-softmax, exp and product; x2 again in backward)")
    print(json.dumps(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
