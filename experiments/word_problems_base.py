r"""What does a base model do on the word-problem task? (issue 26, item 2; trapo/data/word_problems.py)

For each difficulty (2, 3, 4 steps: the config's eval splits, none of them training prompts) this samples
`--samples` responses to `--n` problems at each temperature, with the model's chat template and the Qwen2.5-Math
instruction (`evaluation.prompts.build_prompt`, as the trainer formats its prompts), and prints the accuracy under
the training reward (`data.reward`, strict last box), the boxing rate (any complete \boxed{}), the mean response
length and the share cut at the cap. Then it scores the reference solutions (+ EOS, as the trainer's expert tokens)
teacher-forced under the model: the share of expert tokens with p < alpha (TrSFT's trust region weights those by
p/alpha) and their mean p.

    python experiments/word_problems_base.py                       # SmolLM2-135M-Instruct, 32 x 2 per cell
    python experiments/word_problems_base.py --n 16 --temps 1.0
    python experiments/word_problems_base.py preset=smollm2       # the warmed-up base on the 1-2-step problems
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml (default: data=word_problems "
                                                 "model=smollm2; preset=smollm2: its warmed-up model and task)")
    ap.add_argument("--n", type=int, default=32, help="problems per difficulty")
    ap.add_argument("--samples", type=int, default=2, help="responses per problem and temperature")
    ap.add_argument("--temps", default="1.0,0.6", help="sampling temperatures")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=0.1, help="TrSFT's alpha: the p threshold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=1, help="responses to print per cell")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir

    from evaluation.prompts import build_prompt
    from trapo.data.loading import load_dataset
    from trapo.engines.local import forward_logprobs
    from trapo.engines.sampling import sample
    from trapo.models.loading import load_model_and_tokenizer
    from trapo.rewards import all_boxed, build_reward
    from trapo.rollout import tokenize_prompt

    given = {o.split("=")[0] for o in args.overrides}
    # a preset picks its own data and model (preset=smollm2: the warmed-up model on the 1-2-step problems)
    defaults = [] if "preset" in given else [d for d in ("data=word_problems", "model=smollm2")
                                             if d.split("=")[0] not in given]
    overrides = [*defaults, f"data.eval_n={args.n}", "data.eval_benchmarks=[]", *args.overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    torch.set_num_threads(1)
    t0 = time.time()
    model, tok, template = load_model_and_tokenizer(cfg.model)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    data = load_dataset(cfg.data)
    reward = build_reward(cfg.data.reward)
    temps = [float(t) for t in args.temps.split(",")]
    print(f"model {cfg.model.name}; data {cfg.data.name} (seed {cfg.data.seed}), reward {cfg.data.reward}; "
          f"{args.n} problems x {args.samples} samples per cell, max_new_tokens {args.max_new_tokens}, "
          f"alpha {args.alpha}; loaded in {time.time() - t0:.0f} s", flush=True)

    rows, expert_rows = [], []
    gen = torch.Generator().manual_seed(args.seed)
    for split, items in data.eval_splits.items():
        prompts = [tokenize_prompt(tok, build_prompt(it.question, tok, template), it.solution, it.answer, eos_id=eos)
                   for it in items]
        # expert tokens: each reference solution (+ EOS) teacher-forced after its prompt
        ps = [forward_logprobs(model, p.prompt_ids, p.solution_ids).exp().numpy() for p in prompts]
        allp = np.concatenate(ps)
        expert_rows.append((split, len(items), len(allp), float(allp.mean()), float((allp < args.alpha).mean()),
                            float(np.median(allp))))
        for temp in temps:
            t1 = time.time()
            ids = [p.prompt_ids for p in prompts for _ in range(args.samples)]
            golds = [it.answer for it in items for _ in range(args.samples)]
            outs = sample(model, ids, max_new_tokens=args.max_new_tokens, eos_id=eos, pad_id=pad, temperature=temp,
                          generator=gen)
            texts = [tok.decode(o, skip_special_tokens=True) for o in outs]
            r = np.array(reward(texts, golds))
            boxed = np.array([bool(all_boxed(t)) for t in texts])
            lens = np.array([len(o) for o in outs])
            cut = np.array([len(o) >= args.max_new_tokens and (not o or o[-1] != eos) for o in outs])
            rows.append((split, temp, len(texts), r.mean(), boxed.mean(), r[boxed].mean() if boxed.any() else 0.0,
                         lens.mean(), cut.mean(), (r.reshape(len(items), args.samples).max(1)).mean()))
            print(f"  {split} T={temp}: accuracy {r.mean():.3f}, boxed {boxed.mean():.3f} "
                  f"({time.time() - t1:.0f} s)", flush=True)
            for t, g, rr in list(zip(texts, golds, r))[:args.show]:
                print(f"    [gold {g}, reward {rr:.0f}] {t[:600]!r}", flush=True)
    if hasattr(reward, "close"):
        reward.close()

    print()
    print(f"| difficulty | T | responses | accuracy | boxed | accuracy when boxed | mean length (tokens) "
          f"| cut at {args.max_new_tokens} | problems with >= 1 right of {args.samples} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split, temp, n, acc, box, accb, ln, cut, anyr in rows:
        print(f"| {split} | {temp} | {n} | {acc:.3f} | {box:.3f} | {accb:.3f} | {ln:.0f} | {cut:.3f} | {anyr:.3f} |")
    print()
    print(f"| difficulty | reference solutions | expert tokens (+EOS) | mean p | share p < {args.alpha} | median p |")
    print("|---|---|---|---|---|---|")
    for split, n, nt, mp, low, med in expert_rows:
        print(f"| {split} | {n} | {nt} | {mp:.3f} | {low:.3f} | {med:.3f} |")
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
