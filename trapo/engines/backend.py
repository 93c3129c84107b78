"""The local engine as an evaluation back end: question strings in, sampled answers out."""

from __future__ import annotations

import torch

from trapo.prompts import build_prompt


class EngineBackend:
    def __init__(self, engine, template: str | None, batch_size: int = 64):
        self.engine = engine
        self.template = template
        self.batch_size = batch_size

    def format(self, question: str) -> str:
        return build_prompt(question, self.engine.tokenizer, self.template)

    def generate(self, prompts: list[str], n: int = 1, *, temperature: float, max_new_tokens: int,
                 seed: int = 0) -> list[list[str]]:
        """`n` completions per (already formatted) prompt."""
        tok = self.engine.tokenizer
        ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        flat = [x for x in ids for _ in range(n)]
        gen = torch.Generator().manual_seed(seed)
        outs = self.engine.generate(flat, max_new_tokens=max_new_tokens, temperature=temperature, generator=gen)
        texts = [self.engine.decode(o) for o in outs]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def evaluate_accuracy(items, backend: EngineBackend, reward_fn, *, n_samples: int, temperature: float,
                      max_new_tokens: int, seed: int = 0) -> float:
    """Mean reward over n samples of each item (avg@n)."""
    if not items:
        return float("nan")
    outs = backend.generate([backend.format(it.question) for it in items], n_samples, temperature=temperature,
                            max_new_tokens=max_new_tokens, seed=seed)
    responses = [o for group in outs for o in group]
    golds = [it.answer for it in items for _ in range(n_samples)]
    rewards = reward_fn(responses, golds)
    return float(sum(rewards) / len(rewards))
