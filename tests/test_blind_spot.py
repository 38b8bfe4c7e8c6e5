"""Blind-spot scoring (anomaly/blind_spot.py): end to end on a real (tiny) tokenizer and encoder, changing
the pixels under a scored core leaves its prediction unchanged; the windows lie inside the image, the cores
of each phase partition it, and a straddling object lies whole in a core of some phase."""

import numpy as np
import pytest
import torch

from anomaly.blind_spot import BlindSpotWindows, blind_spot_maps
from data.datasets import HSIPatchExtractor
from encoder.hsi_bert_encoder import HSIEncoderBERT
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer

BANDS, S, H, W = 8, 8, 21, 19
TINY_BERT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
             "hidden_dropout_prob": 0.0}


def tiny_models(guard: bool = True, channels=(8, 8)):
    torch.manual_seed(0)
    cfg = TokenizerConfig(num_bands=BANDS, patch_size=S, stride=4, K_s=8, K_x=8, hidden_dim=8, num_layers=2,
                          band_stride=1, pooled_length=4, encoder_channels=list(channels))
    tokenizer = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg()).eval()
    encoder = HSIEncoderBERT(tokenizer.joint_vocab_size, 1, "none", False, 0.35, S * S, grid_size=S,
                             bert_config=TINY_BERT, spectral_codebook_size=8, spectral_input_dim=BANDS,
                             guard_radius=tokenizer.spatial_vqvae.guard_radius if guard else 0).eval()
    return tokenizer, encoder


def core_prediction(tokenizer, encoder, cube, windows, index):
    """(logits at the core (M, V), predicted spectra (M, B)) of window `index`."""
    corner = windows.corners[index:index + 1]
    patches = torch.from_numpy(HSIPatchExtractor(S, S).gather(cube, corner).transpose(0, 3, 1, 2).copy())
    ids, spectra = tokenizer.tokenize(patches), tokenizer.spectral_vqvae.cells(patches)
    mask = windows.core_masks(np.array([index]), S, 1)
    inputs, visible = encoder.blind_inputs(ids, mask, spectra)
    hidden = encoder.body(inputs, torch.zeros(1, dtype=torch.long), visible)
    return encoder.predict(hidden[mask]), encoder.predict_spectrum(hidden[mask], mask, visible)


def window_at(windows, row, col):
    """Index of the window whose core holds pixel (row, col)."""
    b = windows.boxes
    return int(np.flatnonzero((b[:, 0] <= row) & (row < b[:, 1]) & (b[:, 2] <= col) & (col < b[:, 3]))[0])


CORES = {"interior": (10, 9), "edge": (0, 9), "corner": (H - 1, W - 1)}


def assert_the_core_is_blind(tokenizer, encoder, cube, phase, pixel):
    """Changing the pixels under the core that holds `pixel` leaves its prediction unchanged; changing a pixel just
    beyond the guard ring (context) moves it."""
    windows = BlindSpotWindows(H, W, S, 2, phase)
    index = window_at(windows, *pixel)
    r0, r1, c0, c1 = windows.boxes[index]
    before = core_prediction(tokenizer, encoder, cube, windows, index)
    changed = cube.copy()
    changed[r0:r1, c0:c1] = np.random.default_rng(2).random((r1 - r0, c1 - c0, BANDS)) * 5
    after = core_prediction(tokenizer, encoder, changed, windows, index)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    row = r1 + tokenizer.spatial_vqvae.guard_radius if r1 + 2 < H else r0 - tokenizer.spatial_vqvae.guard_radius - 1
    beyond = cube.copy()
    beyond[row, c0] += 3.0
    assert not torch.equal(before[1], core_prediction(tokenizer, encoder, beyond, windows, index)[1])


@pytest.mark.parametrize("where", list(CORES))
@pytest.mark.parametrize("phase", [0, 1])
@torch.no_grad()
def test_changing_the_core_pixels_leaves_the_core_prediction_unchanged(where, phase):
    tokenizer, encoder = tiny_models()
    cube = np.random.default_rng(1).random((H, W, BANDS), dtype=np.float32)
    assert_the_core_is_blind(tokenizer, encoder, cube, phase, CORES[where])


@torch.no_grad()
def test_without_the_guard_ring_the_spatial_codes_leak_the_core():
    """The check above can fail: with guard_radius 0 the neighbours' spatial codes carry the core's pixels."""
    tokenizer, encoder = tiny_models(guard=False)
    cube = np.random.default_rng(1).random((H, W, BANDS), dtype=np.float32)
    windows = BlindSpotWindows(H, W, S, 2, 0)
    index = window_at(windows, 10, 9)
    r0, r1, c0, c1 = windows.boxes[index]
    leaked = 0
    for seed in range(5):
        changed = cube.copy()
        changed[r0:r1, c0:c1] = np.random.default_rng(seed).random((r1 - r0, c1 - c0, BANDS)) * 5
        before = core_prediction(tokenizer, encoder, cube, windows, index)[0]
        leaked += not torch.equal(before, core_prediction(tokenizer, encoder, changed, windows, index)[0])
    assert leaked > 0


def test_guard_radius_follows_the_spatial_receptive_field():
    assert tiny_models(channels=(8,))[0].spatial_vqvae.guard_radius == 1
    assert tiny_models(channels=(8, 8, 8))[0].spatial_vqvae.guard_radius == 3


@pytest.mark.parametrize("phase", [0, 1])
def test_windows_lie_inside_the_image_and_the_cores_of_a_phase_partition_it(phase):
    windows = BlindSpotWindows(H, W, S, 2, phase)
    assert (windows.corners >= 0).all()
    assert (windows.corners[:, 0] <= H - S).all() and (windows.corners[:, 1] <= W - S).all()
    cover = np.zeros((H, W), dtype=int)
    for r0, r1, c0, c1 in windows.boxes:
        cover[r0:r1, c0:c1] += 1
    assert (cover == 1).all()
    local = windows.boxes - np.repeat(windows.corners, 2, axis=1)  # every core inside its own window
    assert (local >= 0).all() and (local <= S).all()


def test_an_object_straddling_a_core_edge_lies_whole_in_a_core_of_another_phase():
    for start in range(H - 1):  # a 2-pixel object at rows start, start + 1
        whole = []
        for phase in (0, 1):
            windows = BlindSpotWindows(H, W, S, 2, phase)
            whole.append(window_at(windows, start, 5) == window_at(windows, start + 1, 5))
        assert any(whole), start


def test_scene_maps_are_finite_for_every_pixel_including_a_scene_smaller_than_the_patch():
    tokenizer, encoder = tiny_models()
    for shape in [(H, W), (5, 12)]:
        cube = np.random.default_rng(0).random((*shape, BANDS), dtype=np.float32)
        maps = blind_spot_maps(encoder, tokenizer, cube, None, 0, ["lm_nll", "lm_spectral", "ctx_spec", "ctx_rx"], 2, 2, 16,
                               torch.device("cpu"))
        for name, m in maps.items():
            assert m.shape == shape and np.isfinite(m).all(), name


@pytest.mark.parametrize("size, patch, cell, block", [((23, 17), 8, 1, 2), ((20, 26), 8, 2, 1), ((6, 11), 8, 1, 2)])
def test_phase_0_residuals_fill_every_pixel_once_for_ctx_lrx(size, patch, cell, block):
    """ctx_lrx's (H, W, d) cube gets each pixel's residual from the one phase-0 core that holds it."""
    from anomaly.blind_spot import BlindSpotWindows, _paint_components

    height, width = size
    grid = patch // cell
    windows = BlindSpotWindows(height, width, patch, block * cell, 0)
    batch = np.arange(len(windows.corners))
    mask = windows.core_masks(batch, patch, cell)  # (N, T)
    window_of = mask.nonzero(as_tuple=True)[0]  # (M,)
    residual = (window_of.float() + 1)[:, None].repeat(1, 3)  # (M, 3): each core's id + 1
    z = np.zeros((height, width, 3), dtype=np.float32)
    _paint_components(z, windows, batch, residual, mask, (torch.zeros(3), torch.eye(3)), cell, grid)
    expected = np.zeros((height, width), dtype=np.float32)
    for i, (r0, r1, c0, c1) in enumerate(windows.boxes):
        assert (expected[r0:r1, c0:c1] == 0).all()  # the cores of a phase do not overlap
        expected[r0:r1, c0:c1] = i + 1
    assert (expected > 0).all()  # ... and cover the image
    np.testing.assert_array_equal(z[..., 0], expected)


def test_ctx_rx_on_the_leading_residual_axes():
    """rx_components d keeps the d leading residual axes: every axis gives the full-precision distance, and fewer
    give a smaller one (the inverse restricted to a subspace is dominated by the full inverse)."""
    tokenizer, encoder = tiny_models()
    cube = np.random.default_rng(3).random((H, W, BANDS), dtype=np.float32)

    def ctx_rx(d):
        return blind_spot_maps(encoder, tokenizer, cube, None, 0, ["ctx_rx"], 2, 2, 16, torch.device("cpu"),
                               rx_components=d)["ctx_rx"]

    full = ctx_rx(0)
    np.testing.assert_allclose(ctx_rx(BANDS), full, rtol=1e-3, atol=1e-4)
    part = ctx_rx(2)
    assert (part <= full + 1e-3).all() and part.mean() < 0.9 * full.mean()
