"""Windows tokenised from shared stripes give the ids and spectra of the same windows tokenised one by one."""

import numpy as np
import pytest
import torch

import anomaly.window_tokens as window_tokens
from anomaly.window_tokens import WindowTokenizer
from data.datasets import HSIPatchExtractor
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer


def tokenizer(downsample: int, mode: str) -> SSPQTokenizer:
    torch.manual_seed(0)
    cfg = TokenizerConfig(num_bands=10, patch_size=8, stride=4, K_s=16, K_x=16, hidden_dim=8, num_layers=2,
                          band_stride=1, pooled_length=4, encoder_channels=[8, 8], spatial_downsample=downsample,
                          spectral_tokens=mode)
    tok = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg()).eval()
    tok.tokenize(torch.rand(64, 10, 8, 8))  # initialise the codebooks (k-means on first use)
    return tok


def transform(raw: np.ndarray) -> np.ndarray:
    """(..., 14) -> (..., 10): a per-pixel band map, as SpectralPreprocessor.transform is."""
    return np.tanh(raw[..., :10] * 1.5 - raw[..., 4:] * 0.5).astype(np.float32)


@pytest.mark.parametrize("downsample, mode", [(1, "grid"), (2, "grid"), (1, "patch")])
@pytest.mark.parametrize("size", [(23, 29), (6, 30)])  # the second is shorter than a patch: mirrored rows
@pytest.mark.parametrize("budget", [4 * 29 * 10 * 11, 1 << 26])  # a few rows per stripe, or the scene at once
def test_stripes_give_the_ids_of_windows_cut_one_by_one(downsample, mode, size, budget, monkeypatch):
    tok = tokenizer(downsample, mode)
    rng = np.random.default_rng(1)
    cube = rng.random((*size, 14)).astype(np.float32)
    rows = rng.integers(-1, max(1, size[0] - 6), 40)
    cols = rng.integers(-1, size[1] - 6, 40)
    corners = np.stack([np.sort(rows), cols], axis=1)  # (40, 2), sorted by row
    monkeypatch.setattr(window_tokens, "STRIPE_BUDGET", budget)
    seen = []
    for index, ids, spectra in WindowTokenizer(tok, cube, transform, "cpu").windows(corners, 7):
        patches = torch.from_numpy(next(HSIPatchExtractor(8, 8).iter_batches(cube, len(index), transform,
                                                                            corners[index]))[0])
        assert torch.equal(ids, tok.tokenize(patches))
        torch.testing.assert_close(spectra, tok.spectral_vqvae.cells(patches), rtol=1e-6, atol=1e-6)
        seen.extend(index.tolist())
    assert seen == list(range(len(corners)))


def test_a_scene_within_the_budget_is_prepared_once_for_every_call():
    tok = tokenizer(1, "grid")
    cube = np.random.default_rng(2).random((20, 20, 14)).astype(np.float32)
    calls = []
    tokens = WindowTokenizer(tok, cube, lambda raw: calls.append(raw.shape) or transform(raw), "cpu")
    corners = np.array([[0, 0], [5, 3], [12, 12]])
    first = [ids for _, ids, _ in tokens.windows(corners, 2)]
    again = [ids for _, ids, _ in tokens.windows(corners[1:], 2)]
    assert calls == [(20, 20, 14)] and torch.equal(torch.cat(first)[1:], torch.cat(again))


def test_a_larger_scene_encodes_each_row_once_over_calls(monkeypatch):
    tok = tokenizer(1, "grid")
    cube = np.random.default_rng(3).random((40, 20, 14)).astype(np.float32)
    monkeypatch.setattr(window_tokens, "STRIPE_BUDGET", 4 * 20 * 10 * 12)  # 4 corner rows per stripe
    encoded = []
    real = tok.spectral_codes
    monkeypatch.setattr(tok, "spectral_codes", lambda cells: encoded.append(len(cells)) or real(cells))
    tokens = WindowTokenizer(tok, cube, transform, "cpu")
    corners = np.array([[r, c] for r in range(0, 33, 3) for c in (0, 5, 12)])  # (33, 2), inside the image
    first = torch.cat([ids for _, ids, _ in tokens.windows(corners, 5)])
    assert sum(encoded) == 38 * 20  # every pixel of rows 0..37 (the windows reach row 37) once, though stripes overlap
    again = torch.cat([ids for _, ids, _ in tokens.windows(corners[::2], 5)])
    assert sum(encoded) == 38 * 20 and torch.equal(again, first[::2])
    cut = torch.from_numpy(next(HSIPatchExtractor(8, 8).iter_batches(cube, len(corners), transform, corners))[0])
    # tokenised in the same batches of 5: the spatial CNN's rounding depends on the batch size (with one thread a
    # near-tie code flipped between a batch of 5 and one of 33), which is not what this test is about
    assert torch.equal(first, torch.cat([tok.tokenize(part) for part in cut.split(5)]))


def test_unsorted_corners_and_a_training_tokenizer_are_refused():
    tok = tokenizer(1, "grid")
    cube = np.zeros((10, 10, 14), np.float32)
    with pytest.raises(ValueError, match="sorted by row"):
        next(WindowTokenizer(tok, cube, transform, "cpu").windows(np.array([[2, 0], [1, 0]]), 4))
    with pytest.raises(RuntimeError, match="eval mode"):
        WindowTokenizer(tok.train(), cube, transform, "cpu")
