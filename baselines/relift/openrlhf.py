"""ReLIFT inside OpenRLHF's DeepSpeed actor: an actor step hook (trapo/hooks.py `ActorHook`; the algorithm is
baselines/relift/algorithm.py).

The RL step is the TRAPO actor's (GRPO for this method). Around it, on every DeepSpeed rank:

- `collect` (from `TrapoActorPPOTrainer.training_step`, each micro-batch): a sample whose group carries no signal
  (`trapo_zero_signal`, set by the rollout agent from all G rewards) and whose reward is 0 belongs to a hardest
  question; its prompt text (`Experience.prompts`) and reference solution (the JSON label, with the prompt file's
  row) are noted. OpenRLHF keeps both list fields through every concat/split.
- `after_step` (from `ppo_train`, once the RL update is done; `drop_step` instead when DeepSpeed skipped it): the
  ranks' notes are gathered (every rank builds the same buffer: rows in prompt-file order = batch order, newest step
  first); when `sft_data_size` rows have gathered, the newest go through one SFT step: each rank runs its share
  (round-robin) in micro-batches of `--train.micro_batch_size`, all ranks the same number (empty shares run a
  zero-weighted row), the last one at DeepSpeed's accumulation boundary; the loss is summed and divided by the
  step's reference-token count / dp size (DeepSpeed averages over ranks: a token mean over the whole SFT batch).
  The step runs on DeepSpeed's optimizer with ReLIFT's own AdamW state and hyper-parameters swapped in
  (`trapo.engines.openrlhf.optimizer_swap.EngineStateSwap`, on every ZeRO stage) and its own clip; DeepSpeed's LR scheduler, micro-step and step counters
  are left as the RL steps set them.
- `save` / `load`: the buffer (JSON) and this rank's share of the swapped-out AdamW state (safetensors) in the
  OpenRLHF checkpoint's tag directory (`TrapoPolicyModelActor.save_checkpoint`).

Its metrics are `hook/relift_*`, logged as `train/relift_*` (the local hook's names).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch

from baselines.relift.algorithm import HardBuffer, ReliftSettings, sft_loss
from trapo.engines.openrlhf.optimizer_swap import EngineStateSwap, zero3_state_keys

STATE_FILE = "trapo_relift.json"


def _rank_world():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_objects(obj) -> list:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _all_reduce(value: float, op: str, device) -> float:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t.item())


@contextmanager
def temperature_one(actor):
    """The actor's forward on the model's own distribution (logits not divided by the rollout temperature, which
    `actor.adopt` sets for the RL update): the SFT step is a likelihood of reference solutions, no one sampled them,
    and the local engine's SFT step (`baselines.relift.local.LocalRelift`) scores them at temperature 1 too."""
    saved = actor.temperature
    actor.temperature = 1.0
    try:
        yield
    finally:
        actor.temperature = saved


def hard_rows(prompts: Sequence[str], labels: Sequence[Any], rewards: torch.Tensor,
              zero_signal: torch.Tensor) -> dict:
    """{key: row} for the samples of a micro-batch that belong to a hardest question (all G rewards 0)."""
    out = {}
    for i in range(len(prompts)):
        if float(zero_signal[i]) != 1.0 or float(rewards[i]) != 0.0:
            continue
        lab = labels[i]
        obj = json.loads(lab) if isinstance(lab, str) else dict(lab)
        if not obj.get("solution"):
            continue
        row = obj.get("row")
        key = int(row) if row is not None else f"{prompts[i]}\x00{obj['solution']}"
        out[key] = {"row": None if row is None else int(row), "prompt": prompts[i], "solution": obj["solution"]}
    return out


def merge_rows(parts: Sequence[dict]) -> list[dict]:
    """The ranks' notes as one list in prompt-file order (each hardest question once)."""
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return sorted(merged.values(), key=lambda r: (r["row"] is None, r["row"] if r["row"] is not None else 0,
                                                  r["prompt"], r["solution"]))


class ActorRelift:
    """ReLIFT's state on one DeepSpeed rank of the actor (one of `TrapoActorPPOTrainer.hooks`)."""

    config_key = "relift"  # method.relift

    def __init__(self, settings: ReliftSettings):
        self.settings = settings
        self.buffer = HardBuffer(settings.sft_data_size)
        self.sft_steps = 0
        self.swap = EngineStateSwap(lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                                    eps=settings.eps, name="relift")
        self._seen: dict = {}

    @classmethod
    def from_config(cls, cfg) -> "ActorRelift | None":
        s = ReliftSettings.from_config(cfg)
        return cls(s) if s is not None else None

    def check(self, trainer) -> None:
        """An optimizer state the SFT step cannot set aside is refused when the actor is set up, not steps later."""
        zero3_state_keys(trainer.actor.model)

    # ---- during the RL step ----
    def collect(self, experience, rewards: torch.Tensor, zero_signal: torch.Tensor) -> None:
        self._seen.update(hard_rows(list(experience.prompts), list(experience.labels), rewards, zero_signal))

    # ---- after it ----
    def drop_step(self) -> None:
        """Forget the notes of a step whose RL update DeepSpeed skipped (`TrapoActorPPOTrainer.ppo_train`)."""
        self._seen = {}

    def after_step(self, trainer) -> dict[str, float]:
        rows = merge_rows(_all_gather_objects(self._seen))
        self._seen = {}
        self.buffer.add(rows)
        metrics = {"hook/relift_hard_prompts": float(len(rows)),
                   "hook/relift_hard_frac": float(len(rows)) / max(1, int(trainer.args.rollout.batch_size))}
        batch = self.buffer.take()
        if batch is not None:
            st = self.sft_step(trainer, batch)
            metrics.update({"hook/relift_sft_loss": st["nll"], "hook/relift_sft_entropy": st["entropy"],
                            "hook/relift_sft_grad_norm": st["grad_norm"], "hook/relift_sft_tokens": st["tokens"]})
        metrics["hook/relift_buffer_size"] = float(len(self.buffer))
        metrics["hook/relift_sft_steps"] = float(self.sft_steps)
        return metrics

    def _tokenize(self, tokenizer, row: dict) -> tuple[list[int], list[int]]:
        prompt = list(tokenizer(row["prompt"], add_special_tokens=False).input_ids)
        sol = list(tokenizer(row["solution"], add_special_tokens=False).input_ids) + [tokenizer.eos_token_id]
        return prompt, sol[: self.settings.max_tokens]

    @staticmethod
    def _collate(pairs: list[tuple[list[int], list[int]]], pad_id: int, device):
        """OpenRLHF's layout (`_process_response_into_experience` + `concat_experiences`): prompt + solution,
        right-padded; the action mask (one shorter) marks the solution tokens."""
        from openrlhf.utils.utils import zero_pad_sequences

        seqs, attn, act = [], [], []
        for prompt, sol in pairs:
            ids = torch.tensor(prompt + sol, dtype=torch.long)
            mask = torch.zeros(len(ids), dtype=torch.long)
            mask[len(prompt):] = 1
            seqs.append(ids.unsqueeze(0))
            attn.append(torch.ones(1, len(ids), dtype=torch.long))
            act.append(mask[1:].unsqueeze(0))
        return (zero_pad_sequences(seqs, "right", pad_id).to(device), zero_pad_sequences(attn, "right").to(device),
                zero_pad_sequences(act, "right").to(device))

    def sft_step(self, trainer, rows: list[dict]) -> dict[str, float]:
        """One SFT step of ReLIFT's AdamW over `rows` (the same list on every rank)."""
        s = self.settings
        actor, strategy, tok = trainer.actor, trainer.strategy, trainer.tokenizer
        engine = actor.model
        device = next(engine.module.parameters()).device
        rank, world = _rank_world()
        pairs = [self._tokenize(tok, r) for r in rows]
        n_tokens = float(sum(len(sol) for _, sol in pairs))  # every rank tokenizes every row: the same total
        mine = pairs[rank::world]
        micro = max(1, int(trainer.micro_train_batch_size))
        batches = [mine[i:i + micro] for i in range(0, len(mine), micro)]
        n_batches = int(_all_reduce(len(batches), "max", device))
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        nll = ent = 0.0
        own_norm = None
        actor.train()
        with self._sft_engine(engine), temperature_one(actor):
            for j in range(n_batches):
                real = j < len(batches)
                mb = batches[j] if real else [pairs[0]]  # a rank without rows left still joins the reduction
                seqs, attn, act = self._collate(mb, pad_id, device)
                engine.set_gradient_accumulation_boundary(j == n_batches - 1)
                logp, output = actor(seqs, act, attention_mask=attn, return_output=True,
                                     ring_attn_group=strategy.ring_attn_group, return_entropy=True)
                out = sft_loss(logp, output.entropy[:, -act.shape[1]:], act.float(), entropy_coef=s.entropy_coef,
                               normalizer=n_tokens / world)
                engine.backward(out.loss * (1.0 if real else 0.0), scale_wrt_gas=False)
                if j == n_batches - 1 and not hasattr(engine.optimizer, "_global_grad_norm"):
                    # an optimizer without a ZeRO/bf16 wrapper (ZeRO-0 in fp32) reports no norm: the module's grads
                    # are whole and reduced at the boundary, so it is their norm
                    own_norm = torch.linalg.vector_norm(torch.stack(
                        [p.grad.detach().float().norm() for p in engine.module.parameters() if p.grad is not None]))
                engine.step()
                if real:
                    nll += float(out.nll) / world
                    ent += float(out.entropy) / world
            grad_norm = engine.get_global_grad_norm() if own_norm is None else own_norm
        self.sft_steps += 1
        grad_norm = float(grad_norm.item() if torch.is_tensor(grad_norm) else (grad_norm or 0.0))
        return {"nll": _all_reduce(nll, "sum", device), "entropy": _all_reduce(ent, "sum", device),
                "grad_norm": grad_norm, "tokens": n_tokens}

    @contextmanager
    def _sft_engine(self, engine):
        """DeepSpeed's engine set up for one SFT step: ReLIFT's AdamW state and clip, no LR-scheduler step, the
        accumulation boundary set by the caller; afterwards everything as the RL steps left it."""
        zero_opt = engine.optimizer
        saved = {"micro_steps": engine.micro_steps, "global_steps": engine.global_steps,
                 "global_samples": engine.global_samples, "lr_scheduler": engine.lr_scheduler,
                 "clip": engine._config.gradient_clipping, "zero_clip": getattr(zero_opt, "clip_grad", None),
                 "boundary": getattr(engine, "_is_gradient_accumulation_boundary", None)}
        engine.lr_scheduler = None
        engine._config.gradient_clipping = self.settings.grad_clip
        if saved["zero_clip"] is not None:
            zero_opt.clip_grad = self.settings.grad_clip
        try:
            with self.swap.on(engine):
                yield
        finally:
            engine.micro_steps, engine.global_steps = saved["micro_steps"], saved["global_steps"]
            engine.global_samples, engine.lr_scheduler = saved["global_samples"], saved["lr_scheduler"]
            engine._config.gradient_clipping = saved["clip"]
            if saved["zero_clip"] is not None:
                zero_opt.clip_grad = saved["zero_clip"]
            engine._is_gradient_accumulation_boundary = saved["boundary"]

    # ---- checkpoints (next to OpenRLHF's in the tag directory) ----
    def save(self, tag_dir: str | Path) -> None:
        from safetensors.torch import save_file

        rank, _ = _rank_world()
        tag_dir = Path(tag_dir)
        tag_dir.mkdir(parents=True, exist_ok=True)
        tensors, layout = self.swap.state_dict()
        save_file(tensors, str(tag_dir / f"trapo_relift_rank{rank}.safetensors"))
        (tag_dir / f"trapo_relift_rank{rank}.json").write_text(json.dumps(layout))
        if rank == 0:
            (tag_dir / STATE_FILE).write_text(json.dumps({"buffer": self.buffer.state_dict(),
                                                          "sft_steps": self.sft_steps}))

    def load(self, tag_dir: str | Path) -> bool:
        """The state saved in `tag_dir`; False (nothing loaded) when there is none."""
        from safetensors.torch import load_file

        rank, _ = _rank_world()
        tag_dir = Path(tag_dir)
        if not (tag_dir / STATE_FILE).exists():
            return False
        state = json.loads((tag_dir / STATE_FILE).read_text())
        self.buffer.load_state_dict(state["buffer"])
        self.sft_steps = int(state["sft_steps"])
        layout = json.loads((tag_dir / f"trapo_relift_rank{rank}.json").read_text())
        self.swap.load_state_dict(load_file(str(tag_dir / f"trapo_relift_rank{rank}.safetensors")), layout)
        return True
