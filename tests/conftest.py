import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# the tiny models built by tests are cached across test runs (CI sets TRAPO_CACHE in the clone)
os.environ.setdefault("TRAPO_CACHE", str(ROOT / ".cache" / "trapo"))
