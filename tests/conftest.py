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
