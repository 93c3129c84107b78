"""The local engine as an evaluation back end (`evaluation.backends.Backend`): prompts in, answers out.

`evaluation.runner.evaluate_items` formats prompts with `tokenizer` and `prompt_template`."""

from __future__ import annotations

import torch



class EngineBackend:
    def __init__(self, engine, template: str | None, batch_size: int = 64):
        self.engine = engine
        self.template = template
        self.batch_size = batch_size

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def prompt_template(self) -> str | None:
        return self.template

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

