"""Load a policy and its tokenizer from a model config (safetensors only, no remote code by default)."""

from __future__ import annotations

from pathlib import Path

import torch


def _dtype(name: str | None, device: str):
    if name in (None, "auto"):
        return torch.float32 if device == "cpu" else torch.bfloat16
    return getattr(torch, name)


def check_model_source(model_cfg) -> None:
    """Fail fast (before any work) when the configured model cannot be found; loads nothing."""
    kind = model_cfg.kind
    if kind == "gguf":
        from trapo.models.gguf import find_gguf

        find_gguf(model_cfg)
    elif kind == "hf":
        path = Path(str(model_cfg.path))
        if path.exists():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"model.path {path}: not a Hugging Face model directory (no config.json)")
        elif not str(model_cfg.get("hub_id") or ""):
            raise FileNotFoundError(f"model.path {path}: no such model directory")
    elif kind != "tiny":
        raise ValueError(f"model.kind must be 'tiny', 'hf' or 'gguf', got {kind!r}")


def resolve_model_path(model_cfg) -> Path:
    """Directory of the model: the tiny model is built (and cached) on first use."""
    if model_cfg.kind == "tiny":
        from trapo.models.tiny import build_tiny_model

        return build_tiny_model(dict(model_cfg.arch), dict(model_cfg.pretrain), progress=True)
    check_model_source(model_cfg)
    return Path(str(model_cfg.path))


def load_model_and_tokenizer(model_cfg, device: str = "cpu"):
    """(model, tokenizer, prompt_template) for `kind: tiny | hf | gguf`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = model_cfg.kind
    template = model_cfg.get("prompt_template")
    if kind == "gguf":
        from trapo.models.gguf import load_gguf

        model, tok = load_gguf(model_cfg)
        return model.to(device).eval(), tok, template
    check_model_source(model_cfg)
    path = resolve_model_path(model_cfg)
    if kind == "tiny":
        from trapo.models.tiny import PROMPT_TEMPLATE

        template = template or PROMPT_TEMPLATE
    src = str(path) if path.exists() else str(model_cfg.hub_id)
    trust = bool(model_cfg.get("trust_remote_code", False))
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=_dtype(model_cfg.get("dtype"), device), trust_remote_code=trust, use_safetensors=True
    )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok, template
