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
    """Directory of the model: the tiny model and a warmed-up model (`model.warmup`) are built (and cached) on
    first use. A GGUF model without warm-up has no directory: its file's folder is returned."""
    if model_cfg.get("warmup"):
        from trapo.models.warmup import build_warm_model

        return build_warm_model(model_cfg, load_base_model, progress=True)
    if model_cfg.kind == "tiny":
        from trapo.models.tiny import build_tiny_model

        return build_tiny_model(dict(model_cfg.arch), dict(model_cfg.pretrain), progress=True)
    check_model_source(model_cfg)
    if model_cfg.kind == "gguf":
        from trapo.models.gguf import find_gguf

        return find_gguf(model_cfg)[0]
    return Path(str(model_cfg.path))


def load_model_and_tokenizer(model_cfg, device: str = "cpu"):
    """(model, tokenizer, prompt_template) for `kind: tiny | hf | gguf`, after its warm-up if it has one."""
    if model_cfg.get("warmup"):
        path = resolve_model_path(model_cfg)
        model, tok = _load_hf(str(path), model_cfg, device)
        return model, tok, model_cfg.get("prompt_template")
    model, tok, template = load_base_model(model_cfg)
    return model.to(device).eval(), tok, template


def load_base_model(model_cfg, device: str = "cpu"):
    """(model, tokenizer, prompt_template) of the configured weights themselves (no warm-up)."""
    kind = model_cfg.kind
    template = model_cfg.get("prompt_template")
    if kind == "gguf":
        from trapo.models.gguf import load_gguf

        model, tok = load_gguf(model_cfg)
        return model.to(device).eval(), tok, template
    check_model_source(model_cfg)
    path = Path(str(model_cfg.get("path")))
    if kind == "tiny":  # built here, not through resolve_model_path: that would return this model's warm-up
        from trapo.models.tiny import PROMPT_TEMPLATE, build_tiny_model

        path = build_tiny_model(dict(model_cfg.arch), dict(model_cfg.pretrain), progress=True)
        template = template or PROMPT_TEMPLATE
    model, tok = _load_hf(str(path) if path.exists() else str(model_cfg.hub_id), model_cfg, device)
    return model, tok, template


def _load_hf(src: str, model_cfg, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = bool(model_cfg.get("trust_remote_code", False))
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=_dtype(model_cfg.get("dtype"), device), trust_remote_code=trust, use_safetensors=True
    )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok
