#!/usr/bin/env bash
# Set up .venv and run the whole demo on the embedded synthetic scene:
# Stage 1 (tokenizer) + Stage 2 (pre-training), then Stage 3 (detector) + inference.
#   bash scripts/demo.sh
# Outputs: checkpoints/{tokenizer,encoder}/, checkpoints/anomaly/synthetic/ and outputs/synthetic/
# (anomaly_map.npy, head_maps.npz, metrics.json, anomaly_map.png). Re-running replaces the demo's outputs.
# The last lines are Stage 3's summary: seconds per stage, ROC AUC per head, the files written.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
"$PY" main_pretrain.py --config configs/pretrain.yaml
"$PY" main_anomaly.py --config configs/anomaly.yaml --overwrite   # ends with the run's summary
