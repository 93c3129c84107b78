"""How often does a model guess, and how good are its guesses against its working? (docs/miniature.md)

RL can only select a behaviour the model already has. On the embedded task the base either answers with a bare
`\\boxed{}` (a guess) or works the problem out; the gap between the two accuracies, times the share of guesses,
is what selecting working can add to the reward. This samples `--samples` responses to `--n` ordinary problems
of each difficulty at `--temperature` and prints the guess share and both accuracies.

    python experiments/base_behaviour.py                                  # the embedded base model
    python experiments/base_behaviour.py --model outputs/.../checkpoints/step_000100
    python experiments/base_behaviour.py model.pretrain.direct_error_frac=0.0   # another base (built if needed)
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml (preset=smoke, ...)")
    ap.add_argument("--model", default=None, help="a checkpoint dir (default: the config's base model)")
    ap.add_argument("--n", type=int, default=64, help="problems per difficulty")
    ap.add_argument("--samples", type=int, default=8, help="responses per problem")
    ap.add_argument("--steps", default="1,2,3", help="difficulties to measure")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (rollouts use 1.0)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from hydra import compose, initialize_config_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trapo.data import synthetic
    from trapo.engines.sampling import sample
    from trapo.models.loading import resolve_model_path
    from trapo.models.tiny import PROMPT_TEMPLATE
    from trapo.rewards import BoxedExactMatch

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=args.overrides)
    path = args.model or resolve_model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    max_value = int(cfg.data.get("max_value") or synthetic.MAX_VALUE)
    reward = BoxedExactMatch()
    generator = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)
    print(f"model: {path}\n")
    print("| steps | guess share | guess acc | working acc | overall acc | headroom (share x gap) |")
    print("|---|---|---|---|---|---|")
    for steps in (int(s) for s in args.steps.split(",")):
        problems = [synthetic.make_problem(rng, steps, max_value=max_value) for _ in range(args.n)]
        prompts = [tok(PROMPT_TEMPLATE.format(question=p.question), add_special_tokens=False).input_ids
                   for p in problems for _ in range(args.samples)]
        # the engine's rollout sampler: the same distribution the RL rollouts draw from
        with torch.no_grad():
            outs = sample(model, prompts, max_new_tokens=int(cfg.rollout.max_new_tokens), eos_id=tok.eos_token_id,
                          pad_id=tok.pad_token_id, temperature=args.temperature, generator=generator)
        texts = tok.batch_decode(outs, skip_special_tokens=True)
        golds = [p.answer for p in problems for _ in range(args.samples)]
        guessed = [t.lstrip().startswith("\\boxed") for t in texts]
        correct = [r > 0 for r in reward(texts, golds)]
        total, n_guess = len(texts), sum(guessed)
        right = {g: sum(c for c, gg in zip(correct, guessed) if gg == g) for g in (True, False)}
        acc = {True: right[True] / n_guess if n_guess else float("nan"),
               False: right[False] / (total - n_guess) if total > n_guess else float("nan")}
        share = n_guess / total
        print(f"| {steps} | {share:.2f} | {acc[True]:.2f} | {acc[False]:.2f} | "
              f"{(right[True] + right[False]) / total:.2f} | {share * (acc[False] - acc[True]):+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
