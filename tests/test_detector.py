"""HSIAnomalyDetector (spec 6.2): frozen and LoRA paths, forward's dict, whole-scene maps of any H x W."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from anomaly import objective
from anomaly.config import AnomalyConfig
from anomaly.detector import HSIAnomalyDetector
from anomaly.fusion import discount_extent
from anomaly.heads import compute_lm_nll_scores
from encoder.hsi_bert_encoder import HSIEncoderBERT, UniversalHSIModel
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from utils.config import apply_overrides
from utils.errors import ConfigError, DataError

BANDS, S = 8, 6
TINY_BERT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
PATCH_HEADS = {"lm_nll": 1.0, "recon": 1.0, "one_class": 1.0, "rarity": 1.0}


def tiny_universal(seed=0, downsample=1):
    torch.manual_seed(seed)
    cfg = TokenizerConfig(num_bands=BANDS, patch_size=S, stride=3, spatial_downsample=downsample, K_s=8, K_x=8,
                          hidden_dim=8, num_layers=2, band_stride=1, pooled_length=4, encoder_channels=[8])
    tokenizer = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg()).eval()
    grid = S // downsample
    encoder = HSIEncoderBERT(tokenizer.joint_vocab_size, num_domains=2, bert_model_name_or_path="none",
                             load_pretrained_lm=False, mask_ratio=0.35, max_seq_len=grid * grid, grid_size=grid,
                             bert_config=TINY_BERT, spectral_codebook_size=8).eval()
    return UniversalHSIModel(tokenizer, encoder)


def settings(*overrides):
    """A tiny detector's AnomalyConfig: a 2-token blind spot and an 8-dimensional one-class map."""
    return apply_overrides(AnomalyConfig(), ["lm_block=2", "one_class.rep_dim=8", *overrides])


def detector(weights=None, *overrides, use_lora=False):
    det = HSIAnomalyDetector(tiny_universal(), 16, head_weights=weights or PATCH_HEADS, use_lora=use_lora,
                             config=settings(*overrides))
    if det.one_class_head is not None and det.one_class_head.objective == "svdd":
        ids = det.tokenize(torch.rand(4, BANDS, S, S))
        objective.center_from(det, [objective.embeddings(det, ids, torch.zeros(4, dtype=torch.long))])
    return det


def encoder_state(det):
    return {k: v.clone() for k, v in det.universal_model.state_dict().items() if "lora_" not in k}


def test_lm_nll_scores_every_token_exactly_once(monkeypatch):
    det = detector({"lm_nll": 1.0})
    encoder = det.universal_model.encoder
    seen = []
    real = encoder.masked_token_nll

    def spy(tokens, domain_ids, mask, spectra=None):
        seen.append(mask.clone())
        return real(tokens, domain_ids, mask, spectra)

    monkeypatch.setattr(encoder, "masked_token_nll", spy)
    ids = det.tokenize(torch.rand(3, BANDS, S, S))
    with torch.no_grad():
        scores = compute_lm_nll_scores(encoder, ids, torch.zeros(3, dtype=torch.long), block=2)
    coverage = torch.stack(seen).sum(dim=0)  # (N, T): how often each token was masked
    assert torch.equal(coverage, torch.ones_like(coverage))
    assert scores.shape == ids.shape and (scores > 0).all() and torch.isfinite(scores).all()


def test_forward_returns_pixel_maps_per_head_and_combined():
    det = detector()
    out = det(torch.rand(5, BANDS, S, S), torch.zeros(5, dtype=torch.long), mode="eval")
    assert set(out) == set(PATCH_HEADS) | {"combined"}
    for value in out.values():
        assert value.shape == (5, S, S) and torch.isfinite(value).all()


def test_frozen_path_trains_only_the_head_and_changes_no_encoder_weight():
    det = detector()
    head_params = sum(p.numel() for p in det.one_class_head.parameters())
    assert det.trainable_parameter_count() == head_params
    before = encoder_state(det)
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=1e-2)
    det.train()
    for _ in range(3):
        loss = objective.training_losses(det, det.tokenize(torch.rand(4, BANDS, S, S)),
                                         torch.zeros(4, dtype=torch.long))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = encoder_state(det)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lora_adapters_are_injected_frozen_and_travel_in_the_trained_state():
    """The adapters move only in the scene fit (tests/test_adapt.py); the heads' training sees a fixed encoder."""
    det = detector(None, "lora.r=2", "lora.alpha=4", "lora.target_modules=[query, value]", use_lora=True)
    assert det.adapter_parameter_count() > 0
    assert det.trainable_parameter_count() == det.head_parameter_count()
    det.train()
    assert not det.universal_model.encoder.training and not det.universal_model.tokenizer.training
    assert any("lora_A" in k for k in det.trained_state_dict())


def test_lora_with_unknown_module_names_the_key():
    with pytest.raises(ConfigError, match="lora.target_modules"):
        detector(None, "lora.target_modules=[no_such_module]", use_lora=True)


def test_trained_state_round_trip():
    det = detector(None, "lora.r=2", "lora.target_modules=[query]", use_lora=True)
    state = det.trained_state_dict()
    assert any("lora_" in k for k in state) and "one_class_head.c" in state
    assert not any(k.startswith("universal_model.tokenizer") for k in state)
    other = HSIAnomalyDetector(tiny_universal(), 16, head_weights=PATCH_HEADS, use_lora=False, config=settings())
    with pytest.raises(KeyError, match="missing|unexpected"):
        other.load_trained_state_dict(state)


@pytest.mark.parametrize("height, width", [(7, 9), (3, 4), (1, 5), (13, 11)])
def test_anomaly_map_covers_every_pixel_for_any_size(height, width):
    det = detector({**PATCH_HEADS, "grx": 1.0})
    cube = np.random.default_rng(0).random((height, width, BANDS), dtype=np.float32)
    scene = det.score_scene(cube, domain_id=1)
    assert scene.anomaly_map.shape == (height, width) and scene.anomaly_map.dtype == np.float32
    assert np.isfinite(scene.anomaly_map).all()
    assert set(scene.head_maps) == {"lm_nll", "recon", "one_class", "rarity", "grx"}
    for m in scene.head_maps.values():
        assert m.shape == (height, width) and np.isfinite(m).all()
    assert np.array_equal(det.generate_anomaly_map(cube, 1), scene.anomaly_map)


def test_streaming_does_not_depend_on_batch_size():
    det = detector({"recon": 1.0, "rarity": 1.0, "lm_nll": 1.0})
    cube = np.random.default_rng(1).random((10, 12, BANDS), dtype=np.float32)
    a = det.score_scene(cube, 0, batch_size=1)
    b = det.score_scene(cube, 0, batch_size=64)
    for name in a.head_maps:
        assert np.allclose(a.head_maps[name], b.head_maps[name], atol=1e-4)


def test_a_detector_built_by_hand_names_an_unprepared_cube():
    det = detector({"recon": 1.0, "grx": 1.0})
    raw = np.random.default_rng(2).random((9, 9, 2 * BANDS), dtype=np.float32)
    with pytest.raises(DataError, match="bands but the tokenizer expects"):
        det.generate_anomaly_map(raw, 0)


def test_fused_map_is_the_weighted_mean_of_the_normalised_head_maps():
    """The fusion's mechanics, then the Gaussian on the fused map (not a quality claim: the untrained heads here
    need not detect anything)."""
    det = detector({"recon": 1.0, "grx": 2.0, "rarity": 0.5})
    rng = np.random.default_rng(3)
    cube = (0.5 + 0.01 * rng.standard_normal((15, 15, BANDS))).astype(np.float32)
    cube[7, 7] = np.linspace(0, 1, BANDS)
    scene = det.score_scene(cube, 0)
    assert np.unravel_index(scene.head_maps["grx"].argmax(), (15, 15)) == (7, 7)
    weights = {"recon": 1.0, "grx": 2.0, "rarity": 0.5}
    expected = sum(w * scene.normalized[name] for name, w in weights.items()) / sum(weights.values())
    cfg = det.config
    discounted = discount_extent(expected, cfg.extent_window, cfg.line_length, cfg.line_weight)
    np.testing.assert_allclose(scene.anomaly_map, ndimage.gaussian_filter(discounted, cfg.fused_smoothing),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(det.generate_anomaly_map(cube, 0), scene.anomaly_map)
