#!/usr/bin/env bash
# One prepared GPU run (issue 13; benchmarks/gpu_check.py says what it runs): Stages 1-3 with AMP on the HAD
# scenes, then the 1024 x 1024 x 128 memmapped scale case; a table on stdout, a JSON in the work folder.
#   bash benchmarks/gpu_check.sh [--work_dir DIR] [--scenes DIR] [--scene FILE] [--gpu_sizes] [...]
#   bash benchmarks/gpu_check.sh --dry_run          # the CPU path with tiny models (tests/test_gpu_check.py)
# Python: $PYTHON, else .venv/bin/python, else python3. The whole run is stopped (SIGINT, then SIGKILL 30 s
# later) after $GPU_CHECK_TIMEOUT seconds (default 570: under the 10 minutes one device command may take).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"; elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
exec timeout -s INT -k 30 "${GPU_CHECK_TIMEOUT:-570}" "$py" benchmarks/gpu_check.py "$@"
