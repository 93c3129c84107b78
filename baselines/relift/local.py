"""ReLIFT on the local engine: a step hook of the TRAPO trainer (trapo/hooks.py `StepHook`).

After each RL step the hook puts the step's hardest prompts (training-set indices) into the buffer and, when it
holds `sft_data_size` rows, runs one SFT step on their reference solutions with its own AdamW, through the engine's
micro-batches and token budget (`LocalEngine.update_batches`, `logprobs`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from baselines.relift.algorithm import HardBuffer, ReliftSettings, hardest_groups, sft_loss


class LocalRelift:
    """ReLIFT on `trapo.engines.local.LocalEngine`: the buffer of training-set indices and the SFT step with its
    own AdamW (on the same fp32 master weights as the RL optimizer when the model is bf16)."""

    config_key = "relift"  # method.relift; the state.json entry (buffer, counters) and the optimizer's name

    def __init__(self, settings: ReliftSettings, engine):
        from trapo.engines.optim import make_optimizer

        self.settings = settings
        self.engine = engine
        self.buffer = HardBuffer(settings.sft_data_size)
        self.sft_steps = 0
        self.optimizer = make_optimizer(engine.model, lr=settings.lr, weight_decay=settings.weight_decay,
                                        betas=settings.betas, masters=getattr(engine.optimizer, "masters", None))
        for g in self.optimizer.param_groups:
            g["eps"] = settings.eps

    @classmethod
    def from_config(cls, cfg, engine) -> "LocalRelift | None":
        s = ReliftSettings.from_config(cfg)
        return cls(s, engine) if s is not None else None

    def after_rl_step(self, indices: Sequence[int], samples: Sequence, prompt: Callable[[int], Any]) -> dict:
        """The step's hardest prompts into the buffer (training-set indices), then at most one SFT step."""
        t0 = time.perf_counter()
        hard = hardest_groups([s.reward for s in samples], [s.group for s in samples])
        self.buffer.add([int(indices[g]) for g in hard])
        metrics = {"train/relift_hard_prompts": float(len(hard)),
                   "train/relift_hard_frac": float(len(hard)) / max(1, len(indices))}
        rows = self.buffer.take()
        if rows is not None:
            st = self.sft_step([prompt(i) for i in rows])
            metrics.update({"train/relift_sft_loss": st["nll"], "train/relift_sft_entropy": st["entropy"],
                            "train/relift_sft_grad_norm": st["grad_norm"],
                            "train/relift_sft_tokens": st["tokens"]})
            if not st["finite"]:
                metrics["train/relift_sft_skipped_nonfinite"] = 1.0
            metrics["time/relift_sft_s"] = time.perf_counter() - t0
        metrics["train/relift_buffer_size"] = float(len(self.buffer))
        metrics["train/relift_sft_steps"] = float(self.sft_steps)
        return metrics

    def sft_step(self, prompts: Sequence) -> dict[str, float]:
        """One AdamW step of this optimizer on the reference solutions of `prompts` (each + EOS, cut to the
        response cap), the token-mean over the whole batch; the prompt of each row runs once (PromptStates)."""
        from trapo.rollout import Sample

        eng, s = self.engine, self.settings
        samples = [Sample(g, 0, list(p.prompt_ids), list(p.solution_ids[: s.max_tokens]), [], reward=1.0)
                   for g, p in enumerate(prompts)]
        n_tokens = float(sum(len(x.expert_ids) for x in samples))
        eng.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        eng.optimizer.zero_grad(set_to_none=True)
        nll = ent = 0.0
        for states, batches in eng.update_batches(samples):  # the engine's micro-batches and token budget
            for idx in batches:
                mb, logp, entropy = eng.logprobs(states, samples, idx)
                out = sft_loss(logp, entropy, mb.expert_weight, entropy_coef=s.entropy_coef, normalizer=n_tokens)
                out.loss.backward()
                eng._grads_to_masters()
                nll += float(out.nll)
                ent += float(out.entropy)
            states.backward()
            eng._grads_to_masters()
        grad_norm = torch.nn.utils.clip_grad_norm_(eng._updated_params(), s.grad_clip)
        finite = bool(torch.isfinite(grad_norm)) and math.isfinite(nll)
        if finite:
            self.optimizer.step()
            self.sft_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        eng.optimizer.zero_grad(set_to_none=True)
        return {"nll": nll, "entropy": ent, "grad_norm": float(grad_norm), "tokens": n_tokens, "finite": finite}

    # checkpoints: the buffer and counters in state.json, the optimizer's tensors beside the RL optimizer's
    def optimizers(self) -> dict:
        return {self.config_key: self.optimizer}

    def state(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "sft_steps": self.sft_steps}

    def load(self, state: Mapping[str, Any] | None) -> None:
        if state is None:
            raise ValueError("the checkpoint has no ReLIFT state (written by another method or an older trapo)")
        self.buffer.load_state_dict(state["buffer"])
        self.sft_steps = int(state["sft_steps"])
