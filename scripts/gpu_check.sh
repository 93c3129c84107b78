#!/usr/bin/env bash
# One-GPU check of the GPU paths (scripts/gpu_check.py; docs/openrlhf.md), at most 8 minutes on one H100/H200:
# the local engine on CUDA (fp32, bf16) and one DeepSpeed actor step (ZeRO-2, ZeRO-3, bf16) against it.
# Writes results/gpu_check.json (GPU_CHECK_OUT to change). Without CUDA: a SKIP line, exit 0, nothing written.
#
#   bash scripts/gpu_check.sh
#   GPU_CHECK_WHEELS=/path/to/wheels bash scripts/gpu_check.sh   # a machine without internet: install what is
#                                   # missing (deepspeed, openrlhf, trapo's deps) from that folder, keep its torch
# Uses the machine's own torch; needs no vLLM, Ray or flash-attn (vLLM's imports are the tests' stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    && [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  "$PY" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" >"$constraints"   # never another torch
  DS_BUILD_OPS=0 "$PY" -m pip install -q --no-index --find-links "$GPU_CHECK_WHEELS" -c "$constraints" \
    "$GPU_CHECK_WHEELS"/*.whl
fi
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" scripts/gpu_check.py --out "${GPU_CHECK_OUT:-results/gpu_check.json}" "$@"
