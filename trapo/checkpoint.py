"""Checkpoints: the model (safetensors, HF layout), optimizer, LR schedule, RNG states, data position, run id.

Layout of <root>/step_000020/:

    model.safetensors, config.json, tokenizer files   the policy, a Hugging Face model directory on its own
    trainer_state.safetensors                         optimizer tensors (AdamW moments) and torch RNG states
    state.json                                        step, optimizer layout, LR schedule, python and numpy RNG
                                                      states, data position, MLflow run id, phase

Nothing is pickled: tensors go to safetensors, everything else to JSON, so loading a checkpoint never runs
code from it. A checkpoint is written to a temporary directory and renamed into place, so a kill mid-write
never leaves a half checkpoint that `latest()` would pick; only the newest `keep` are kept.
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

FORMAT = 2  # 1: optimizer + torch RNG in optimizer.pt (torch.save); 2: trainer_state.safetensors + JSON
TRAINER_STATE = "trainer_state.safetensors"


@dataclass
class CheckpointState:
    path: Path
    step: int
    meta: dict


def _split_optimizer(sd: dict, prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state_dict -> (tensors for safetensors, JSON-able layout that names them)."""
    tensors, state = {}, {}
    for idx, entry in sd["state"].items():
        out = {}
        for k, v in entry.items():
            if torch.is_tensor(v):
                name = f"{prefix}.{idx}.{k}"
                tensors[name] = v.detach().cpu().contiguous()
                out[k] = {"tensor": name}
            else:
                out[k] = v
        state[str(idx)] = out
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def _join_optimizer(layout: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {}
    for idx, entry in layout["state"].items():
        state[int(idx)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in entry.items()}
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in layout["param_groups"]]
    return {"state": state, "param_groups": groups}


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
        """The newest complete checkpoint (temporary directories of an interrupted write are ignored)."""
        dirs = self._dirs()
        if not dirs:
            return None
        try:
            meta = json.loads((dirs[-1] / "state.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{dirs[-1] / 'state.json'}: unreadable checkpoint state ({e})") from None
        return CheckpointState(dirs[-1], int(meta["step"]), meta)

    def save(self, step: int, engine, meta: dict, optimizers: dict | None = None) -> Path:
        """`optimizers`: further optimizers of the run by name (ReLIFT's SFT AdamW), saved like the engine's."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp_step_*"):  # left by a write that was killed
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / f"step_{step:06d}"
        tmp = self.root / f".tmp_step_{step:06d}_{os.getpid()}"
        engine.model.save_pretrained(tmp, safe_serialization=True)
        engine.tokenizer.save_pretrained(tmp)
        tensors, optimizer = _split_optimizer(engine.optimizer.state_dict())
        extra = {}
        for name, opt in (optimizers or {}).items():
            more, extra[name] = _split_optimizer(opt.state_dict(), prefix=f"{name}_optimizer")
            tensors.update(more)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        save_file(tensors, str(tmp / TRAINER_STATE))
        scheduler = getattr(engine, "scheduler", None)
        py = random.getstate()
        np_state = np.random.get_state()
        state = {
            "format": FORMAT,
            "step": step,
            **meta,
            "optimizer": optimizer,
            **({"optimizers": extra} if extra else {}),
            "lr_schedule": scheduler.state_dict() if scheduler is not None else None,
            "python_rng": [py[0], list(py[1]), py[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        (tmp / "state.json").write_text(json.dumps(state))  # last: its presence marks a complete checkpoint
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self._dirs()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self, state: CheckpointState, engine, optimizers: dict | None = None) -> int:
        """Load weights, optimizer, LR schedule and RNG states into `engine` (and the named `optimizers` saved
        with it); returns the step to continue from."""
        from safetensors.torch import load_file

        if state.meta.get("format") != FORMAT or not (state.path / TRAINER_STATE).exists():
            raise ValueError(
                f"{state.path}: checkpoint format {state.meta.get('format', 1)} is not {FORMAT} (written by an older "
                f"trapo, or incomplete; {TRAINER_STATE} missing); rerun with resume=never to start over"
            )
        weights = load_file(str(state.path / "model.safetensors"))
        missing, unexpected = engine.model.load_state_dict(weights, strict=False)
        # tied embeddings are saved once; anything else missing means a different model
        missing = [k for k in missing if "lm_head" not in k]
        if missing or unexpected:
            raise ValueError(f"{state.path}: checkpoint does not match the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        if getattr(engine.model.config, "tie_word_embeddings", False):
            engine.model.tie_weights()
        tensors = load_file(str(state.path / TRAINER_STATE))
        engine.optimizer.load_state_dict(_join_optimizer(state.meta["optimizer"], tensors))
        for name, opt in (optimizers or {}).items():
            layout = (state.meta.get("optimizers") or {}).get(name)
            if layout is None:
                raise ValueError(f"{state.path}: the checkpoint has no {name} optimizer state; rerun with "
                                 "resume=never to start over")
            opt.load_state_dict(_join_optimizer(layout, tensors))
        scheduler = getattr(engine, "scheduler", None)
        if scheduler is not None and state.meta.get("lr_schedule") is not None:
            scheduler.load_state_dict(dict(state.meta["lr_schedule"]))  # it pops keys
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                           key=lambda k: int(k.rsplit(".", 1)[1]))]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        py = state.meta["python_rng"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npst = state.meta["numpy_rng"]
        np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
        return state.step
