import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# the tiny models built by tests are cached across test runs (CI sets TRAPO_CACHE in the clone)
os.environ.setdefault("TRAPO_CACHE", str(ROOT / ".cache" / "trapo"))


@pytest.fixture
def one_thread():
    """torch on one thread for the test (engine numerics and timings do not depend on the core count)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """`extended` tests repeat what a CI-run test already covers on another case, for minutes: skipped with the
    reason unless TRAPO_EXTENDED_TESTS=1 (CI's budget). `gpu` tests need a CUDA device: skipped with the reason
    where there is none (CPU machines, CI)."""
    import torch

    if os.environ.get("TRAPO_EXTENDED_TESTS") != "1":
        extended = pytest.mark.skip(reason="extended case (minutes; a CI-run test covers its code path on another "
                                           "case): TRAPO_EXTENDED_TESTS=1 runs it")
        for item in items:
            if "extended" in item.keywords:
                item.add_marker(extended)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device (torch {torch.__version__}: none available); "
                                   "scripts/gpu_check.sh runs the gpu tests on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
