"""Checkpoints: HF model directory (safetensors) + optimizer + RNG states + step, written atomically.

Layout: <root>/step_000020/{model.safetensors, config.json, tokenizer files, optimizer.pt, state.json}.
A checkpoint is written to a temporary directory and renamed into place, so a kill mid-write never
leaves a half checkpoint that `latest()` would pick; only the newest `keep` are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class CheckpointState:
    path: Path
    step: int
    meta: dict


class Checkpointer:
    def __init__(self, root: str | Path, keep: int = 2):
        self.root = Path(root)
        self.keep = max(1, int(keep))

    def _dirs(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted((p for p in self.root.glob("step_*") if (p / "state.json").exists()),
                      key=lambda p: int(p.name.split("_")[1]))

    def latest(self) -> CheckpointState | None:
        dirs = self._dirs()
        if not dirs:
            return None
        meta = json.loads((dirs[-1] / "state.json").read_text())
        return CheckpointState(dirs[-1], int(meta["step"]), meta)

    def save(self, step: int, engine, meta: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:06d}"
        tmp = self.root / f".tmp_step_{step:06d}_{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        engine.model.save_pretrained(tmp, safe_serialization=True)
        engine.tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": engine.optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
                   tmp / "optimizer.pt")
        np_state = np.random.get_state()
        state = {
            "step": step,
            **meta,
            "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        (tmp / "state.json").write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self._dirs()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self, state: CheckpointState, engine) -> int:
        """Load weights, optimizer and RNG states into `engine`; returns the step to continue from."""
        from safetensors.torch import load_file

        weights = load_file(str(state.path / "model.safetensors"))
        missing, unexpected = engine.model.load_state_dict(weights, strict=False)
        # tied embeddings are saved once; anything else missing means a different model
        missing = [k for k in missing if "lm_head" not in k]
        if missing or unexpected:
            raise ValueError(f"{state.path}: checkpoint does not match the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        if getattr(engine.model.config, "tie_word_embeddings", False):
            engine.model.tie_weights()
        extra = torch.load(state.path / "optimizer.pt", weights_only=True, map_location="cpu")
        engine.optimizer.load_state_dict(extra["optimizer"])
        torch.set_rng_state(extra["torch_rng"])
        py = state.meta["python_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npst = state.meta["numpy_rng"]
        np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
        return state.step
