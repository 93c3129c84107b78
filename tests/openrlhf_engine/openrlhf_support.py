"""Shared set-up of the `openrlhf` tests: skip without OpenRLHF, test-only stubs, CPU shims, fixtures.

OpenRLHF's trainer modules import vLLM and flash-attn's CUDA extension at module level; neither exists on
a CPU machine. `openrlhf_modules()` puts tests/openrlhf_engine/stubs on sys.path only while it imports OpenRLHF, then
takes the stub modules out of sys.path and sys.modules again, so other tests never see a fake vLLM.
Where a real vllm / flash_attn_2_cuda is installed (a GPU machine), the stubs are not used.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

STUBS = Path(__file__).resolve().parent / "stubs"
REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "OpenRLHF is not installed: bash scripts/install_openrlhf.sh (CPU route, see docs/openrlhf.md)"

SMOKE_ARCH = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2, "max_positions": 512}
SMOKE_PRETRAIN = {"seed": 0, "n_problems": 2000, "min_steps": 1, "max_steps": 2, "lr": 2.0e-3, "steps": 60,
                  "batch_size": 32}


def require_openrlhf():
    if importlib.util.find_spec("openrlhf") is None:
        pytest.skip(INSTALL_HINT, allow_module_level=True)


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


_LOADED: dict[str, object] = {}


def openrlhf_modules(*names: str) -> list:
    """Import OpenRLHF modules (and trapo modules that import them) with the stubs in place if needed."""
    stubbed = [n for n in ("vllm", "flash_attn_2_cuda") if _missing(n)]
    added = False
    if stubbed and str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))
        added = True
    try:
        mods = [importlib.import_module(n) for n in names]
    finally:
        if added:
            sys.path.remove(str(STUBS))
        for n in list(sys.modules):
            f = getattr(sys.modules[n], "__file__", None) or ""
            if f.startswith(str(STUBS)):
                _LOADED[n] = sys.modules.pop(n)
    return mods


@contextlib.contextmanager
def cpu_cuda_shims(current_device):
    """OpenRLHF's actor code calls torch.cuda.* unconditionally (it runs on GPUs); on CPU these stand in."""
    import torch

    saved = (torch.cuda.current_device, torch.cuda.synchronize, torch.cuda.empty_cache)
    torch.cuda.current_device = lambda: current_device
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    try:
        yield
    finally:
        torch.cuda.current_device, torch.cuda.synchronize, torch.cuda.empty_cache = saved


def compose(*overrides: str):
    """The Hydra config the app would resolve, for `engine=openrlhf` tests."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return _compose(config_name="config", overrides=list(overrides))
