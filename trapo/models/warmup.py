r"""A short format warm-up of a real LM, built once and cached: the base that preset=smollm2 trains.

SmolLM2-135M-Instruct (Q4_1) answers 0 of 64 one-step word problems at T = 1 and boxes 5% of its answers
(results/smollm2_base_behaviour.md): every GRPO group is all zeros, so RL has nothing to learn from. The paper's
base (Qwen2.5-Math-7B) already writes a boxed answer. The warm-up gives the small model that much: a few dozen SFT
steps on word problems answered in a **terse** style,

    22 + 4 = 26. 26 * 2 = 52. The answer is \boxed{52}.

which is not the teacher's (trapo/data/word_problems.py: "Step 1: Maya adds the 4 new cookies. 22 + 4 = 26. ...",
with × and ÷), so the reference solutions the guided methods learn from stay partly unlikely under the warmed
model (their low-probability tokens are what TrSFT's trust region is about). The warm-up problems come from their
own seed; tests/e2e/test_smollm2_preset.py checks that none of them is a training, validation or evaluation question.

The result is an ordinary safetensors model directory under ``$TRAPO_CACHE/models/warm-<key>``, keyed by a hash
of the base model's file and the warm-up recipe (as the tiny model is), so every later run and evaluation loads it
at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from trapo.data import word_problems as wp
from trapo.models.tiny import build_cached, cache_root, plain, sft_fit

_SIGN = {"add": "+", "sub": "-", "mul": "*", "div": "/", "packs_add": "+", "packs_sub": "-"}


def terse_solution(problem: wp.Problem) -> str:
    """The warm-up's answer style: the equations only, `*` and `/`, then the boxed answer."""
    x, parts = problem.start, []
    for op in problem.ops:
        y = wp.apply_op(x, op)
        if op[0] in ("packs_add", "packs_sub"):
            parts.append(f"{op[1]} * {op[2]} = {op[1] * op[2]}, {x} {_SIGN[op[0]]} {op[1] * op[2]} = {y}.")
        else:
            parts.append(f"{x} {_SIGN[op[0]]} {op[1]} = {y}.")
        x = y
    return " ".join(parts) + f" The answer is \\boxed{{{x}}}."


def warmup_problems(recipe: dict) -> list[wp.Problem]:
    return wp.make_split(int(recipe["n_problems"]), int(recipe["min_steps"]), int(recipe["max_steps"]),
                         seed=int(recipe["seed"]), max_value=int(recipe["max_value"]))


def _base_identity(model_cfg) -> dict:
    """What names the base weights: the GGUF file (name and size) or the model directory's config."""
    if model_cfg.kind == "gguf":
        from trapo.models.gguf import find_gguf

        folder, name = find_gguf(model_cfg)
        return {"gguf": name, "bytes": (folder / name).stat().st_size}
    return {"path": str(model_cfg.path)}


def cache_key(model_cfg) -> str:
    blob = json.dumps({"base": _base_identity(model_cfg), "dtype": str(model_cfg.get("dtype")),
                       "warmup": plain(model_cfg.warmup), "gen": wp.GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_warm_model(model_cfg, load_base, root: Path | None = None, progress: bool = True) -> Path:
    """Path of the cached warmed model, warming the base up first if needed (minutes on a CPU, once).
    `load_base(model_cfg)` gives the base (model, tokenizer, prompt template): trapo.models.loading's."""
    from evaluation.prompts import build_prompt

    recipe = plain(model_cfg.warmup)
    root = Path(root) if root is not None else cache_root() / "models"

    def build(tmp: Path) -> None:
        t0 = time.time()
        torch.manual_seed(int(recipe["seed"]))
        model, tok, template = load_base(model_cfg)
        examples = []
        for p in warmup_problems(recipe):
            prompt = tok(build_prompt(p.question, tok, template), add_special_tokens=False).input_ids
            answer = tok(terse_solution(p), add_special_tokens=False).input_ids + [tok.eos_token_id]
            examples.append((prompt + answer, len(prompt)))
        losses = sft_fit(model, examples, tok.pad_token_id, steps=int(recipe["steps"]),
                         batch_size=int(recipe["batch_size"]), lr=float(recipe["lr"]), seed=int(recipe["seed"]),
                         warmup_steps=int(recipe["warmup_steps"]), desc=f"warming up {model_cfg.name}",
                         progress=progress)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        meta = {"base": _base_identity(model_cfg), "warmup": recipe, "losses": [round(x, 4) for x in losses],
                "build_seconds": round(time.time() - t0, 1)}
        (tmp / "trapo_warmup.json").write_text(json.dumps(meta, indent=2))

    return build_cached(root / f"warm-{cache_key(model_cfg)}", build)
