"""How likely are the reference solutions' tokens under a model? (docs/miniature.md)

TrSFT weights an expert token's gradient by min(1, p/alpha): tokens the policy gives p << alpha are barely
trained. This prints, for each reference style of the embedded task, the share of expert tokens below alpha and
the mean p, on ordinary and on skill problems, under the base model or a trained checkpoint.

    python experiments/expert_probs.py                                  # the embedded base model
    python experiments/expert_probs.py --model outputs/.../checkpoints/step_000100
    python experiments/expert_probs.py --styles base,folded preset=smoke
    python experiments/expert_probs.py --train-set preset=smollm2      # the run config's own training references

`--train-set` scores the first `--n` training items of the run config as the trainer tokenizes them (prompt
template, reference + EOS, cut to rollout.max_new_tokens), under the model the runs start from, split by position
in the reference (TRAPO's prefixes are its first 20% / 50% / 100%, method.guidance_schedule.prefix_ratios).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def token_probs(model, tok, prompt: str, solution: str) -> list[float]:
    """p of each solution token given the prompt and the solution so far."""
    from trapo.engines.local import forward_logprobs

    q = tok(prompt, add_special_tokens=False).input_ids
    s = tok(solution, add_special_tokens=False).input_ids
    return forward_logprobs(model, q, s).exp().tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml (preset=smoke, ...)")
    ap.add_argument("--model", default=None, help="a checkpoint dir (default: the config's base model)")
    ap.add_argument("--styles", default="spaced,base,folded", help="reference styles to score")
    ap.add_argument("--n", type=int, default=64, help="problems per kind")
    ap.add_argument("--steps", type=int, default=2, help="steps per problem")
    ap.add_argument("--train-set", action="store_true",
                    help="score the run config's training references instead of the embedded task's styles")
    args = ap.parse_args(argv)
    if args.train_set:
        return train_set_probs(args)

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trapo.data import synthetic
    from trapo.data.loading import to_items
    from trapo.models.loading import resolve_model_path
    from trapo.models.tiny import PROMPT_TEMPLATE

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    torch.set_num_threads(1)
    path = Path(args.model) if args.model else resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    alpha = float(cfg.method.alpha)
    rng = random.Random(int(cfg.data.seed) + 999)
    max_value = int(cfg.data.get("max_value") or synthetic.MAX_VALUE)
    print(f"model {path}; {args.n} problems of {args.steps} steps per kind; alpha = {alpha}")
    print(f"| style | problems | tokens | mean p | share p < {alpha} |")
    print("|---|---|---|---|---|")
    for skill in (False, True):
        problems = [synthetic.make_problem(rng, args.steps, skill=skill, max_value=max_value) for _ in range(args.n)]
        for style in args.styles.split(","):
            items = to_items(problems, style)
            ps = np.concatenate([token_probs(model, tok, PROMPT_TEMPLATE.format(question=it.question), it.solution)
                                 for it in items])
            print(f"| {style} | {'skill' if skill else 'ordinary'} | {len(ps)} | {ps.mean():.3f} | "
                  f"{(ps < alpha).mean():.3f} |")
    return 0


def train_set_probs(args) -> int:
    """The share of the training references' tokens below alpha under the starting model, by position."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir

    from evaluation.prompts import build_prompt
    from trapo.data.loading import load_dataset
    from trapo.engines.local import forward_logprobs
    from trapo.models.loading import load_model_and_tokenizer
    from trapo.rollout import tokenize_prompt

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    torch.set_num_threads(int(cfg.engine.get("num_threads") or 1))
    model, tok, template = load_model_and_tokenizer(cfg.model)
    model.eval()
    alpha, cap = float(cfg.method.alpha), int(cfg.rollout.max_new_tokens)
    items = load_dataset(cfg.data).train[: args.n]
    bands = {"first 20%": (0.0, 0.2), "20-50%": (0.2, 0.5), "50-100%": (0.5, 1.0)}
    ps, pos = [], []
    with torch.no_grad():
        for it in items:
            p = tokenize_prompt(tok, build_prompt(it.question, tok, template), it.solution, it.answer,
                                eos_id=tok.eos_token_id)
            sol = p.solution_ids[:cap]
            ps.append(forward_logprobs(model, p.prompt_ids, sol).exp().float().numpy())
            pos.append((np.arange(len(sol)) + 0.5) / len(sol))
    ps, pos = np.concatenate(ps), np.concatenate(pos)
    print(f"{cfg.model.get('name', cfg.model.kind)} ({cfg.preset_name}): {len(items)} training references, "
          f"{len(ps)} tokens (cut to {cap}); alpha = {alpha}")
    print(f"| tokens | count | mean p | share p < {alpha} | share p < 0.5 |")
    print("|---|---|---|---|---|")
    print(f"| all | {len(ps)} | {ps.mean():.3f} | {(ps < alpha).mean():.3f} | {(ps < 0.5).mean():.3f} |")
    for name, (lo, hi) in bands.items():
        m = (pos >= lo) & (pos < hi)
        print(f"| {name} of each reference | {int(m.sum())} | {ps[m].mean():.3f} | {(ps[m] < alpha).mean():.3f} | "
              f"{(ps[m] < 0.5).mean():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
