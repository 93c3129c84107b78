"""One RL update on one fixed batch, at several learning rates: does it move the policy the way the advantages say,
and how far? The check that picks a learning rate from what the base model does, before any training run.

    python experiments/update_check.py preset=smollm2 --lrs 2e-6,5e-6,2e-5     # ~3 min a learning rate on one core
    python experiments/update_check.py preset=smoke --lrs 1e-4,1e-3             # seconds

It draws the rollouts of the first training step whose groups have a reward signal (the trainer's own prompts,
sampler, seed and reward), then, from the same weights and a fresh optimizer each time, applies the method's update
once at each learning rate and scores every sample again with a plain forward of the model. It prints:

- how far the update's own log-probs (prompt states, chunked head, token budget, checkpointing) are from a plain
  forward's on the batch (they are what the gradient is taken of);
- per learning rate, the mean change of each sample's summed log-prob (nats) for positive, negative and zero
  advantages. A healthy step raises the first and lowers the second; the zero-advantage samples, which the loss
  does not push, measure the step's collateral drift: a step that moves them by most of a nat is not a small
  step of the policy gradient any more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plain_logprobs(model, samples) -> list[torch.Tensor]:
    """Each sample's response-token (prefix + completion) log-probs from one ordinary forward of prompt + response."""
    from trapo.engines.local import forward_logprobs

    model.eval()
    return [forward_logprobs(model, s.prompt_ids, list(s.expert_ids) + list(s.completion_ids)) for s in samples]


def update_path_gap(engine, samples, reference: list[torch.Tensor]) -> float:
    """Largest |log p| difference between the update's own scoring of `samples` and `reference`."""
    engine.model.eval()
    gap = 0.0
    with torch.no_grad():
        for states, batches in engine.update_batches(samples):
            for idx in batches:
                _, logp, _ = engine.logprobs(states, samples, idx)
                for row, i in enumerate(idx):
                    n = len(reference[i])
                    gap = max(gap, float((logp[row, :n].cpu() - reference[i]).abs().max()))
    return gap


def first_step_with_signal(trainer, start: int, tries: int):
    """(step, rollouts) of the first step from `start` whose rewards differ within some group."""
    from trapo import advantages as adv_lib
    from trapo.data.order import step_seed
    from trapo.rl_step import collect_rollouts

    cfg, eng = trainer.cfg, trainer.engine
    for step in range(start, start + tries):
        gen = torch.Generator().manual_seed(step_seed(int(cfg.seed), step, salt=2))  # the trainer's step generator
        ro = collect_rollouts(
            [trainer._prompt(i) for i in trainer._batch_indices(step)], trainer.rl_schedule, trainer.method,
            generate=lambda inputs, n: eng.generate(inputs, max_new_tokens=n, temperature=float(cfg.rollout.temperature),
                                                    generator=gen),
            decode=eng.decode, reward_fn=trainer.reward_fn, max_new_tokens=int(cfg.rollout.max_new_tokens))
        if adv_lib.zero_signal_fraction(ro.rewards, ro.groups) < 1.0:
            return step, ro
    raise SystemExit(f"no step in {start}..{start + tries - 1} has a group with different rewards: nothing to check")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (preset=smollm2, method=grpo by default)")
    ap.add_argument("--lrs", default="2e-6,5e-6,2e-5", help="comma-separated learning rates")
    ap.add_argument("--step", type=int, default=0, help="first training step to draw rollouts from")
    ap.add_argument("--tries", type=int, default=10, help="steps to try for one with a reward signal")
    ap.add_argument("--out", default=None, help="also write the table here (Markdown)")
    args = ap.parse_args(argv)

    import tempfile

    from experiments.crosscheck_trl import compose
    from trapo.rl_step import update
    from trapo.trainer import Trainer

    cfg = compose(["progress=false", "resume=never", "checkpoint.every=0", *args.overrides])
    from baselines import hooks_for

    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="trapo-update-check-"), hooks=hooks_for(cfg))
    trainer._prepare()  # data and model checks, as a run makes them
    trainer._setup()
    eng = trainer.engine
    step, ro = first_step_with_signal(trainer, args.step, args.tries)
    samples = ro.samples
    adv = torch.tensor([s.advantage for s in samples])
    before = plain_logprobs(eng.model, samples)
    gap = update_path_gap(eng, samples, before)
    weights = {k: v.detach().clone() for k, v in eng.model.state_dict().items()}

    lines = [f"Batch: step {step} of seed {cfg.seed} ({cfg.method.name}, preset {cfg.preset_name}), {len(samples)} samples, "
             f"rewards {[round(float(r), 2) for r in ro.rewards.tolist()]}",
             f"Update-path log-probs vs a plain forward: max |difference| {gap:.2e}", "",
             "Mean change of a sample's summed log-prob after one update (nats):", "",
             f"| lr | A > 0 (n={int((adv > 0).sum())}) | A < 0 (n={int((adv < 0).sum())}) | "
             f"A = 0 (n={int((adv == 0).sum())}) | grad norm |", "|---|---|---|---|---|"]
    for lr in [float(x) for x in args.lrs.split(",") if x]:
        eng.model.load_state_dict(weights)
        eng.reset_optimizer(lr)
        stats = update(eng, samples, trainer.method, int(cfg.rollout.max_new_tokens),
                       temperature=float(cfg.rollout.temperature))
        after = plain_logprobs(eng.model, samples)
        d = torch.tensor([float((a - b).sum()) for a, b in zip(after, before)])

        def mean(mask):
            return f"{float(d[mask].mean()):+.3f}" if bool(mask.any()) else "-"
        lines.append(f"| {lr:g} | {mean(adv > 0)} | {mean(adv < 0)} | {mean(adv == 0)} | {stats['grad_norm']:.3g} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"Command: `python experiments/update_check.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
