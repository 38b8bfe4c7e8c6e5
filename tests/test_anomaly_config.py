"""AnomalyConfig validation, the shipped YAMLs, and per-scene score normalisation / fusion."""

import pytest
import torch

from anomaly.config import AnomalyConfig
from anomaly.fusion import MAD_TO_STD, fuse_scores, normalize_scores
from utils.config import load_config
from utils.errors import ConfigError


@pytest.mark.parametrize("path", ["configs/anomaly.yaml", "configs/anomaly_gpu.yaml"])
def test_shipped_configs_load(path):
    cfg = load_config(AnomalyConfig, path)
    assert cfg.supervised is False
    assert cfg.freeze_encoder is True


@pytest.mark.parametrize("override, key", [
    (["anomaly_batch_size=0"], "anomaly_batch_size"),
    (["normalize_scores=softmax"], "normalize_scores"),
    (["fused_smoothing=-0.5"], "fused_smoothing"),
    (["freeze_encoder=false"], "freeze_encoder"),
    (["head_weights.recon=-1"], "head_weights.recon"),
    (["head_weights={lm_nll: 0, lm_spectral: 0, ctx_spec: 0, ctx_rx: 0, ctx_lrx: 0, recon: 0, one_class: 0, rarity: 0, grx: 0, "
      "lrx: 0}"], "head_weights"),
    (["supervised=true"], "supervised_data_path"),
    (["local_rx.outer=3"], "local_rx.outer"),
    (["inference_stride=-1"], "inference_stride"),
    (["cube_layout=chw"], "cube_layout: must be one of auto, hwb, bhw, got 'chw'"),
    (["lora.target_modules=[]"], "lora.target_modules"),
    (["head_weight.recon=1"], "head_weights"),  # typo: the message suggests the right key
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(AnomalyConfig, None, override)


def test_robust_z_uses_median_and_mad():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    z = normalize_scores(x, "robust_z")
    # median 3, MAD = median(|x - 3|) = median(2, 1, 0, 1, 97) = 1
    assert torch.allclose(z, (x - 3.0) / MAD_TO_STD)


def test_minmax_and_constant_maps():
    x = torch.tensor([[2.0, 4.0], [6.0, 10.0]])
    assert torch.allclose(normalize_scores(x, "minmax"), (x - 2) / 8)
    assert torch.count_nonzero(normalize_scores(torch.full((3, 3), 5.0), "robust_z")) == 0
    assert torch.count_nonzero(normalize_scores(torch.full((3, 3), 5.0), "minmax")) == 0


def test_tied_majority_falls_back_to_std():
    x = torch.tensor([1.0] * 8 + [5.0, 9.0])  # MAD = 0
    z = normalize_scores(x, "robust_z")
    assert torch.isfinite(z).all() and z[-1] > z[-2] > 0


def test_fusion_is_scale_free_and_weighted():
    a = torch.tensor([0.0, 1.0, 2.0, 10.0])
    fused = fuse_scores({"recon": a, "grx": 1000 * a + 7}, {"recon": 1.0, "grx": 3.0, "lm_nll": 0.0})
    assert torch.allclose(fused, normalize_scores(a))
    with pytest.raises(KeyError, match="rarity"):
        fuse_scores({"recon": a}, {"recon": 1.0, "rarity": 1.0})
