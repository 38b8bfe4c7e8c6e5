"""Blind-spot scoring (anomaly/blind_spot.py, anomaly/blind_spot_windows.py): end to end on a real (tiny)
tokenizer and encoder, changing the pixels under a window's scored cores leaves their prediction unchanged, in
both layouts; the windows lie inside the image, the cores of each phase cover it (once for block), a straddling
object lies whole in a core of some phase, and where the lattice hides every id the spectra alone score the same."""

import numpy as np
import pytest
import torch

from anomaly.blind_spot import blind_spot_maps
from anomaly.blind_spot_windows import BlindSpotWindows
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


def scene_maps(encoder, tokenizer, cube, heads, layout="block", context_ids=True, offsets=2, refine_share=0.0,
               **kwargs):
    """blind_spot_maps with 2 x 2-token cores, 16 windows a batch, on the CPU."""
    return blind_spot_maps(encoder, tokenizer, cube, None, 0, heads, 2, offsets, 16, torch.device("cpu"),
                           layout=layout, context_ids=context_ids, refine_share=refine_share, **kwargs)


def core_prediction(tokenizer, encoder, cube, windows, index, context_ids=True):
    """(logits at the core (M, V), predicted spectra (M, B)) of window `index`."""
    corner = windows.corners[index:index + 1]
    patches = torch.from_numpy(HSIPatchExtractor(S, S).gather(cube, corner).transpose(0, 3, 1, 2).copy())
    ids, spectra = tokenizer.tokenize(patches), tokenizer.spectral_vqvae.cells(patches)
    mask = windows.core_masks(np.array([index]), 1)
    inputs, visible = encoder.blind_inputs(ids, mask, spectra, context_ids)
    hidden = encoder.body(inputs, torch.zeros(1, dtype=torch.long), visible)
    return encoder.predict(hidden[mask]), encoder.predict_spectrum(hidden[mask], mask, visible)


def window_at(windows, row, col):
    """Index of a window whose cores hold pixel (row, col)."""
    local_r, local_c = row - windows.corners[:, 0], col - windows.corners[:, 1]  # (N,) each
    inside = (local_r >= 0) & (local_r < S) & (local_c >= 0) & (local_c < S)
    n = np.flatnonzero(inside)
    return int(n[windows.rows[n, local_r[n]] & windows.cols[n, local_c[n]]][0])


def scene_pixels(windows, index, core: bool):
    """(rows, cols) of the image pixels of window `index` that are (core True) or are not its core pixels."""
    r, c = np.nonzero(windows.core_pixels(np.array([index]))[0] == core)
    return windows.corners[index, 0] + r, windows.corners[index, 1] + c


CORES = {"interior": (10, 9), "edge": (0, 9), "corner": (H - 1, W - 1)}


def assert_the_core_is_blind(tokenizer, encoder, cube, layout, phase, pixel, context_ids=True):
    """Changing the pixels under the cores of the window whose core holds `pixel` leaves their prediction unchanged;
    changing one of its other pixels (context) moves it."""
    windows = BlindSpotWindows.tile(layout, H, W, S, 2, phase)
    index = window_at(windows, *pixel)
    before = core_prediction(tokenizer, encoder, cube, windows, index, context_ids)
    changed = cube.copy()
    rows, cols = scene_pixels(windows, index, core=True)
    changed[rows, cols] = np.random.default_rng(2).random((len(rows), BANDS)) * 5
    after = core_prediction(tokenizer, encoder, changed, windows, index, context_ids)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    rows, cols = scene_pixels(windows, index, core=False)
    core_rows, core_cols = scene_pixels(windows, index, core=True)
    near = np.argmin(np.abs(rows[:, None] - core_rows) + np.abs(cols[:, None] - core_cols), axis=0)[0]
    beyond = cube.copy()  # a context pixel next to a core: inside the local mean the spectrum is predicted from
    beyond[rows[near], cols[near]] += 3.0
    assert not torch.equal(before[1], core_prediction(tokenizer, encoder, beyond, windows, index, context_ids)[1])


@pytest.mark.parametrize("where", list(CORES))
@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("layout, context_ids", [("block", True), ("block", False), ("lattice", True)])
@torch.no_grad()
def test_changing_the_core_pixels_leaves_the_core_prediction_unchanged(where, phase, layout, context_ids):
    tokenizer, encoder = tiny_models()
    cube = np.random.default_rng(1).random((H, W, BANDS), dtype=np.float32)
    assert_the_core_is_blind(tokenizer, encoder, cube, layout, phase, CORES[where], context_ids)


@torch.no_grad()
def test_without_the_guard_ring_the_spatial_codes_leak_the_core():
    """The check above can fail: with guard_radius 0 the neighbours' spatial codes carry the core's pixels."""
    tokenizer, encoder = tiny_models(guard=False)
    cube = np.random.default_rng(1).random((H, W, BANDS), dtype=np.float32)
    windows = BlindSpotWindows.tile("block", H, W, S, 2, 0)
    index = window_at(windows, 10, 9)
    rows, cols = scene_pixels(windows, index, core=True)
    leaked = 0
    for seed in range(5):
        changed = cube.copy()
        changed[rows, cols] = np.random.default_rng(seed).random((len(rows), BANDS)) * 5
        before = core_prediction(tokenizer, encoder, cube, windows, index)[0]
        leaked += not torch.equal(before, core_prediction(tokenizer, encoder, changed, windows, index)[0])
    assert leaked > 0


def test_guard_radius_follows_the_spatial_receptive_field():
    assert tiny_models(channels=(8,))[0].spatial_vqvae.guard_radius == 1
    assert tiny_models(channels=(8, 8, 8))[0].spatial_vqvae.guard_radius == 3


def cover(windows, height, width):
    """(H, W): how many windows hide each pixel."""
    count = np.zeros((height, width), dtype=int)
    for index in range(len(windows.corners)):
        np.add.at(count, scene_pixels(windows, index, core=True), 1)
    return count


@pytest.mark.parametrize("size", [(H, W), (100, 100), (9, 8), (5, 7)])
@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("layout", ["block", "pairs", "lattice"])
def test_windows_lie_inside_the_image_and_the_cores_of_a_phase_cover_it(size, phase, layout):
    height, width = size
    windows = BlindSpotWindows.tile(layout, height, width, S, 2, phase)
    assert (np.diff(windows.corners[:, 0]) >= 0).all()  # sorted by row, as WindowTokenizer needs
    if height >= S and width >= S:
        assert (windows.corners >= 0).all()
        assert (windows.corners[:, 0] <= height - S).all() and (windows.corners[:, 1] <= width - S).all()
    count = cover(windows, height, width)
    assert (count == 1).all() if layout == "block" else (count >= 1).all()


def test_the_lattice_scores_a_scene_in_a_quarter_of_the_windows_with_cores_two_apart():
    block, lattice = (BlindSpotWindows.tile(layout, 100, 100, S, 2, 1) for layout in ("block", "lattice"))
    assert len(lattice.corners) * 3.5 < len(block.corners)
    masks = lattice.core_masks(np.arange(len(lattice.corners)), 1).reshape(-1, S, S)  # (N, g, g)
    for mask in masks:  # runs of 2 cells, 2 apart, along both axes, as encoder.masking.lattice_mask trains them
        rows, cols = mask.any(dim=1), mask.any(dim=0)
        for line in (rows, cols):
            on = torch.nonzero(line)[:, 0]
            assert all((b - a) in (1, 3) for a, b in zip(on[:-1].tolist(), on[1:].tolist()))


def test_an_object_straddling_a_core_edge_lies_whole_in_a_core_of_another_phase():
    for start in range(H - 1):  # a 2-pixel object at rows start, start + 1
        whole = []
        for phase in (0, 1):
            windows = BlindSpotWindows.tile("block", H, W, S, 2, phase)
            whole.append(window_at(windows, start, 5) == window_at(windows, start + 1, 5))
        assert any(whole), start


@pytest.mark.parametrize("layout", ["block", "lattice"])
@pytest.mark.parametrize("context_ids", [True, False])
def test_scene_maps_are_finite_for_every_pixel_including_a_scene_smaller_than_the_patch(layout, context_ids):
    tokenizer, encoder = tiny_models()
    for shape in [(H, W), (5, 12)]:
        cube = np.random.default_rng(0).random((*shape, BANDS), dtype=np.float32)
        maps = scene_maps(encoder, tokenizer, cube, ["lm_nll", "lm_spectral", "ctx_spec", "ctx_rx"], layout, context_ids)
        for name, m in maps.items():
            assert m.shape == shape and np.isfinite(m).all(), name


@pytest.mark.parametrize("size, patch, cell, block", [((23, 17), 8, 1, 2), ((20, 26), 8, 2, 1), ((6, 11), 8, 1, 2)])
def test_phase_0_residuals_fill_every_pixel_once_for_ctx_lrx(size, patch, cell, block):
    """ctx_lrx's (H, W, d) cube gets each pixel's residual from the one phase-0 core that holds it."""
    from anomaly.blind_spot import _paint_components

    height, width = size
    grid = patch // cell
    windows = BlindSpotWindows.tile("block", height, width, patch, block * cell, 0)
    batch = np.arange(len(windows.corners))
    mask = windows.core_masks(batch, cell)  # (N, T)
    window_of = mask.nonzero(as_tuple=True)[0]  # (M,)
    residual = (window_of.float() + 1)[:, None].repeat(1, 3)  # (M, 3): each core's id + 1
    z = np.zeros((height, width, 3), dtype=np.float32)
    _paint_components(z, windows, batch, residual, mask, (torch.zeros(3), torch.eye(3)), cell, grid)
    expected = np.zeros((height, width), dtype=np.float32)
    for i in range(len(windows.corners)):
        rows, cols = scene_pixels(windows, i, core=True)
        assert (expected[rows, cols] == 0).all()  # the cores of a phase do not overlap
        expected[rows, cols] = i + 1
    assert (expected > 0).all()  # ... and cover the image
    np.testing.assert_array_equal(z[..., 0], expected)


def test_ctx_rx_on_the_leading_residual_axes():
    """rx_components d keeps the d leading residual axes: every axis gives the full-precision distance, and fewer
    give a smaller one (the inverse restricted to a subspace is dominated by the full inverse)."""
    tokenizer, encoder = tiny_models()
    cube = np.random.default_rng(3).random((H, W, BANDS), dtype=np.float32)

    def ctx_rx(d):
        return scene_maps(encoder, tokenizer, cube, ["ctx_rx"], rx_components=d)["ctx_rx"]

    full = ctx_rx(0)
    np.testing.assert_allclose(ctx_rx(BANDS), full, rtol=1e-3, atol=1e-4)
    part = ctx_rx(2)
    assert (part <= full + 1e-3).all() and part.mean() < 0.9 * full.mean()


def test_without_context_ids_no_window_is_tokenised_and_the_lattice_scores_as_with_them(monkeypatch):
    """context_ids false: the encoder sees spectra only, so no window is tokenised. A 2 x 2 lattice in 8 x 8
    windows with guard radius 2 hides every id anyway: its maps equal those with context_ids true. The block
    layout shows ids beyond the ring, so there the setting changes the maps; a token head still gets its targets."""
    tokenizer, encoder = tiny_models()
    torch.nn.init.normal_(encoder.spectrum_out[-1].weight, std=0.1)  # predictions that depend on the hidden states
    cube = np.random.default_rng(4).random((H, W, BANDS), dtype=np.float32)
    heads = ["ctx_spec", "ctx_rx"]

    def no_codes(*args):
        raise AssertionError("a window was tokenised")

    with monkeypatch.context() as patched:
        patched.setattr(tokenizer, "joint_ids", no_codes)
        patched.setattr(tokenizer, "spectral_codes", no_codes)
        spectra_only = {layout: scene_maps(encoder, tokenizer, cube, heads, layout, False)
                        for layout in ("lattice", "block")}
    with_ids = {layout: scene_maps(encoder, tokenizer, cube, heads, layout, True) for layout in ("lattice", "block")}
    for name in heads:
        np.testing.assert_array_equal(spectra_only["lattice"][name], with_ids["lattice"][name])
        assert not np.array_equal(spectra_only["block"][name], with_ids["block"][name])
    token_head = scene_maps(encoder, tokenizer, cube, ["lm_nll"], "block", False)["lm_nll"]
    assert np.isfinite(token_head).all() and token_head.std() > 0


def test_refined_pixels_take_the_maximum_of_the_coarse_and_the_one_core_views():
    """refine_share: the top pixels of the coarse (lattice, one phase) map are scored again one core a window at two
    phases; there the score is the maximum of both scorings, elsewhere it lies between the coarse score and that."""
    tokenizer, encoder = tiny_models()
    torch.nn.init.normal_(encoder.spectrum_out[-1].weight, std=0.1)
    cube = np.random.default_rng(5).random((H, W, BANDS), dtype=np.float32)
    coarse = scene_maps(encoder, tokenizer, cube, ["ctx_spec"], "lattice", False, offsets=1)["ctx_spec"]
    full = scene_maps(encoder, tokenizer, cube, ["ctx_spec"], "block", False, offsets=2)["ctx_spec"]
    refined = scene_maps(encoder, tokenizer, cube, ["ctx_spec"], "lattice", False, offsets=1,
                         refine_share=0.1)["ctx_spec"]
    candidates = coarse >= np.quantile(coarse, 0.9)
    both = np.maximum(coarse, full)
    np.testing.assert_array_equal(refined[candidates], both[candidates])
    assert (refined >= coarse).all() and (refined <= both).all()
    assert 0 < (refined != coarse).mean() < 0.9  # some pixels moved, and not the whole scene was scored again

