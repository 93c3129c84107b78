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
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    print(f"model: {path}\n")
    print("| steps | guess share | guess acc | working acc | overall acc | headroom (share x gap) |")
    print("|---|---|---|---|---|---|")
    for steps in (int(s) for s in args.steps.split(",")):
        problems = [synthetic.make_problem(rng, steps, max_value=max_value) for _ in range(args.n)]
        guesses, right = {True: 0, False: 0}, {True: 0, False: 0}
        for p in problems:
            ids = tok(PROMPT_TEMPLATE.format(question=p.question), add_special_tokens=False,
                      return_tensors="pt").input_ids
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=args.temperature, top_k=0, top_p=1.0,
                                     max_new_tokens=int(cfg.rollout.max_new_tokens),
                                     num_return_sequences=args.samples, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
            for seq in out[:, ids.shape[1]:]:
                text = tok.decode(seq, skip_special_tokens=True)
                guess = text.lstrip().startswith("\\boxed")
                guesses[guess] += 1
                right[guess] += reward([text], [p.answer])[0] > 0
        total = guesses[True] + guesses[False]
        share = guesses[True] / total
        acc = {g: right[g] / guesses[g] if guesses[g] else float("nan") for g in (True, False)}
        print(f"| {steps} | {share:.2f} | {acc[True]:.2f} | {acc[False]:.2f} | "
              f"{(right[True] + right[False]) / total:.2f} | {share * (acc[False] - acc[True]):+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
