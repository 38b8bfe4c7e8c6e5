#!/usr/bin/env bash
# Set up .venv (with test dependencies) and run the whole test suite on the CPU.
#   bash scripts/test.sh [extra pytest arguments]
# pytest's exit status is passed through unchanged: 5 (no test ran) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q "$@"
