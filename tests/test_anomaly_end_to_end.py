"""End to end on the synthetic scene: Stages 1 + 2 (tiny, few steps), then main_anomaly.py's train + infer.

Real runs with real assertions, the gt read only by the metrics: the fused map's ROC AUC on the synthetic
scene is above 0.9 with the default heads, and each learned head clears a floor on its own with the
classical grx / lrx heads switched off (so the floor is not carried by RX).
"""

import json

import numpy as np
import pytest

from anomaly.config import HEAD_NAMES
from main_anomaly import build_parser, main
from main_pretrain import run_pretraining

pytestmark = pytest.mark.slow

# The context heads (ctx_lrx is off by default), each alone (synthetic: global RX 0.91; measured 0.99 for all three after this fixture's
# 40 pre-training steps). The token heads (lm_nll, lm_spectral) are off by default and stay at chance after so
# short a pre-training; the benchmark measures them.
LEARNED_FLOORS = {"ctx_rx": 0.95, "ctx_spec": 0.95, "ctx_lrx": 0.95}


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages12")
    return run_pretraining(
        "configs/pretrain.yaml", "configs/tokenizer.yaml",
        overrides=[f"output_dir={root / 'encoder'}", "pretrain_epochs=2", "steps_per_epoch=20",
                   "num_warmup_steps=5", "bert_config.hidden_size=32", "bert_config.intermediate_size=64"],
        tokenizer_overrides=[f"output_dir={root / 'tokenizer'}", "num_epochs=2", "max_patches_per_scene=150"])


def run_stage3(encoder_ckpt, root, *sets):
    out = root / "out"
    args = build_parser().parse_args(["--config", "configs/anomaly.yaml", "--encoder_ckpt", str(encoder_ckpt),
                                      "--out_dir", str(out), "--set", f"output_dir={root / 'anomaly'}",
                                      "--set", "anomaly_epochs=2", *[x for s in sets for x in ("--set", s)]])
    main(args)
    return out, json.loads((out / "metrics.json").read_text())


def test_synthetic_scene_end_to_end(encoder_ckpt, tmp_path):
    out, metrics = run_stage3(encoder_ckpt, tmp_path)
    assert (tmp_path / "anomaly" / "anomaly_detector.pth").is_file()
    assert (out / "anomaly_map.png").stat().st_size > 0
    assert metrics["mode"] == "unsupervised" and metrics["scene"] == "synthetic"
    assert metrics["fused"]["auc"] > 0.9, metrics["heads"]
    anomaly_map = np.load(out / "anomaly_map.npy")
    assert anomaly_map.shape == (100, 100) and np.isfinite(anomaly_map).all()


def test_each_learned_head_detects_on_its_own(encoder_ckpt, tmp_path):
    weights = [f"head_weights.{name}={1.0 if name in LEARNED_FLOORS else 0.0}"
               for name in HEAD_NAMES]
    _, metrics = run_stage3(encoder_ckpt, tmp_path, *weights)
    assert set(metrics["heads"]) == set(LEARNED_FLOORS)
    aucs = {name: metrics["heads"][name]["auc"] for name in LEARNED_FLOORS}
    print("learned heads on the synthetic scene:", aucs, "fused", metrics["fused"]["auc"])
    assert all(aucs[name] > floor for name, floor in LEARNED_FLOORS.items()), aucs
