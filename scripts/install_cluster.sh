#!/usr/bin/env bash
# trapo + OpenRLHF 0.11.2 + vLLM 0.29.0 on a CUDA node of the GPU cluster (docs/openrlhf.md). Run on every node.
#
#   bash scripts/install_cluster.sh              # into the active venv (or .venv, created if missing)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 bash scripts/install_cluster.sh   # another CUDA build
#
# A plain `pip install -e ".[openrlhf,vllm]"` on a fresh machine stops at flash-attn 2.8.3: its setup.py imports
# torch, which pip's isolated build environment does not have. So torch (the version vLLM 0.29.0 pins) and the
# build tools come first, then the extras with --no-build-isolation (flash-attn then fetches its prebuilt wheel
# for this torch/CUDA/Python, or compiles with nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  . .venv/bin/activate
fi
t0=$(date +%s)
index=()
[ -n "${TORCH_INDEX_URL:-}" ] && index=(--index-url "$TORCH_INDEX_URL")
pip install "${index[@]}" "torch==$TORCH_VERSION"
pip install "setuptools>=68" wheel packaging ninja psutil numpy
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH_VERSION" >"$constraints"   # never let a later requirement move torch
pip install -c "$constraints" --no-build-isolation -e ".[openrlhf,vllm]"
python - <<'PY'
import torch, openrlhf, deepspeed, ray, vllm, flash_attn  # noqa: F401
print(f"cluster install OK: torch {torch.__version__} (CUDA {torch.version.cuda}), vllm {vllm.__version__}, "
      f"deepspeed {deepspeed.__version__}, ray {ray.__version__}, flash-attn {flash_attn.__version__}")
PY
echo "install_cluster.sh: done in $(( $(date +%s) - t0 )) s"
