"""End to end on the synthetic scene: Stages 1 + 2 (tiny, few steps), then main_anomaly.py's train + infer.

A real run with real assertions: the fused map's ROC AUC on the synthetic scene's gt is above 0.9, and
the figure and metrics file exist. The gt is read only by the metrics.
"""

import json

import numpy as np
import pytest

from main_anomaly import build_parser, main
from main_pretrain import run_pretraining

pytestmark = pytest.mark.slow


def test_synthetic_scene_end_to_end(tmp_path):
    encoder_ckpt = run_pretraining(
        "configs/pretrain.yaml", "configs/tokenizer.yaml",
        overrides=[f"output_dir={tmp_path / 'encoder'}", "pretrain_epochs=2", "steps_per_epoch=20",
                   "num_warmup_steps=5", "bert_config.hidden_size=32", "bert_config.intermediate_size=64"],
        tokenizer_overrides=[f"output_dir={tmp_path / 'tokenizer'}", "num_epochs=2", "max_patches_per_scene=150"])
    out = tmp_path / "out"
    args = build_parser().parse_args(["--config", "configs/anomaly.yaml", "--encoder_ckpt", str(encoder_ckpt),
                                      "--out_dir", str(out), "--set", f"output_dir={tmp_path / 'anomaly'}",
                                      "--set", "anomaly_epochs=2"])
    main(args)
    assert (tmp_path / "anomaly" / "anomaly_detector.pth").is_file()
    assert (out / "anomaly_map.png").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "unsupervised" and metrics["scene"] == "synthetic"
    assert metrics["fused"]["auc"] > 0.9, metrics["heads"]
    anomaly_map = np.load(out / "anomaly_map.npy")
    assert anomaly_map.shape == (100, 100) and np.isfinite(anomaly_map).all()
