"""Local RX (anomaly.baselines.local_rx_components) against the implementation it replaced, kept here only as the
reference: the same maps to float32 tolerance on random cubes (edge windows, tiny scenes, row chunks, pixel blocks,
no-data masks, backgrounds without spread) and on a real scene."""

from pathlib import Path

import numpy as np
import pytest

from anomaly.baselines import local_rx_components, principal_components
from data.io import load_scene
from utils.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "had" / "abu-urban-1.npz"
TOLERANCE = 1e-5  # max |new - old| / max |old|: float32 resolution, both maps being float32


def _clipped_length(length, size):
    centres = np.arange(length)
    return np.minimum(centres + size // 2 + 1, length) - np.maximum(centres - size // 2, 0)


def _window_sum(integral, offset, size, rows, c0, c1):
    r0, r1, c0, c1 = offset, offset + rows, offset + c0, offset + c1
    return (integral[r0 + size:r1 + size, c0 + size:c1 + size] - integral[r0:r1, c0 + size:c1 + size]
            - integral[r0 + size:r1 + size, c0:c1] + integral[r0:r1, c0:c1])


def _reference(z, inner=7, outer=21, ridge=1e-6, chunk_rows=None, valid=None):
    """local_rx_components as of commit 63cc9d2 (integral image per row chunk, LU solves per column block),
    unchanged but for its window checks and budgets, which the tests fix."""
    height, width, d = z.shape
    starts = np.concatenate([[0], np.cumsum(np.arange(d, 0, -1))])
    channels = d + int(starts[-1]) + (valid is not None)
    halo = outer // 2
    rows = chunk_rows or max(1, (1 << 24) // ((width + 2 * halo + 1) * channels) - 2 * halo - 1)
    cols = max(1, (1 << 22) // (min(rows, height) * (channels + d * d)))
    counts = (np.outer(_clipped_length(height, outer), _clipped_length(width, outer))
              - np.outer(_clipped_length(height, inner), _clipped_length(width, inner)))[..., None]
    out = np.empty((height, width), dtype=np.float32)
    eye = np.eye(d)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        n = r1 - r0
        integral = np.zeros((n + 2 * halo + 1, width + 2 * halo + 1, channels))
        values = integral[1:, 1:]
        lo, hi = max(0, r0 - halo), min(height, r1 + halo)
        inside = (slice(lo - (r0 - halo), hi - (r0 - halo)), slice(halo, halo + width))
        if valid is None:
            values[inside + (slice(0, d),)] = z[lo:hi]
        else:
            weight = np.asarray(valid[lo:hi], dtype=np.float64)
            values[inside + (slice(0, d),)] = z[lo:hi] * weight[..., None]
            values[inside + (-1,)] = weight
        zb = values[..., :d]
        for i in range(d):
            values[..., d + starts[i]:d + starts[i + 1]] = zb[..., i:i + 1] * zb[..., i:]
        np.cumsum(values, axis=0, out=values)
        np.cumsum(values, axis=1, out=values)
        for c0 in range(0, width, cols):
            c1 = min(width, c0 + cols)
            sums = (_window_sum(integral, 0, outer, n, c0, c1)
                    - _window_sum(integral, halo - inner // 2, inner, n, c0, c1))
            count = counts[r0:r1, c0:c1] if valid is None else np.maximum(sums[..., -1:], 2)
            mean = sums[..., :d] / count
            cov = np.empty((n, c1 - c0, d, d))
            for i in range(d):
                block = sums[..., d + starts[i]:d + starts[i + 1]]
                cov[..., i, i:] = block
                cov[..., i:, i] = block
            cov -= count[..., None] * mean[..., :, None] * mean[..., None, :]
            cov /= (count - 1)[..., None]
            trace = np.trace(cov, axis1=-2, axis2=-1)[..., None, None]
            cov += ridge * trace / d * eye
            diff = z[r0:r1, c0:c1] - mean
            scarce = trace[..., 0, 0] <= 0 if valid is None else (sums[..., -1] < 2) | (trace[..., 0, 0] <= 0)
            cov[scarce], diff[scarce] = eye, 0.0
            sol = np.linalg.solve(cov, diff[..., None])[..., 0]
            out[r0:r1, c0:c1] = np.einsum("rcd,rcd->rc", diff, sol)
    return out


def _assert_same_map(new, old):
    assert new.dtype == np.float32 and new.shape == old.shape
    assert np.abs(new - old).max() <= TOLERANCE * np.abs(old).max()


def _random_z(h, w, d, seed=0, dtype=np.float64):
    """Correlated components with a few outlying pixels: (h, w, d)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(h, w, d)) @ rng.normal(size=(d, d))
    z[rng.integers(0, h, 3), rng.integers(0, w, 3)] += 5.0
    return z.astype(dtype)


def _holes(h, w, seed=0):
    """A no-data mask: scattered pixels and one block wide enough that some windows hold fewer than 2 with data."""
    valid = np.random.default_rng(seed).random((h, w)) > 0.15
    valid[h // 4:h // 4 + 6, w // 3:w // 3 + 7] = False
    return valid


CASES = {  # name: (h, w, d, inner, outer, chunk_rows, block_pixels, integral_budget)
    "default windows, 30 components": (25, 27, 30, 7, 21, None, None, None),
    "row chunks, blocks of part of a row": (23, 17, 6, 3, 9, 4, 5, None),
    "one-row chunks, blocks of several rows": (9, 31, 3, 1, 5, 1, 70, None),
    "6 x 6 tiles (a 225-pixel integral image)": (23, 29, 6, 3, 9, None, 8, 225 * 28),
    "windows larger than the scene": (6, 5, 3, 3, 21, None, None, None),
    "tiny scene": (3, 3, 2, 1, 3, None, None, None),
    "one row": (1, 20, 2, 1, 5, None, None, None),
    "one component": (12, 14, 1, 3, 7, 5, 7, None),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_local_rx_matches_the_replaced_implementation(case, masked, dtype, monkeypatch):
    h, w, d, inner, outer, chunk_rows, block_pixels, integral_budget = CASES[case]
    if block_pixels is not None:
        monkeypatch.setattr("anomaly.baselines.BLOCK_PIXELS", block_pixels)
    if integral_budget is not None:  # float64 elements: 225 pixels of 27 channels, 28 with a mask
        monkeypatch.setattr("anomaly.baselines.INTEGRAL_BUDGET", integral_budget)
    z = _random_z(h, w, d, dtype=dtype)
    valid = _holes(h, w) if masked else None
    new = local_rx_components(z, inner, outer, chunk_rows=chunk_rows, valid=valid)
    _assert_same_map(new, _reference(z, inner, outer, chunk_rows=chunk_rows, valid=valid))


@pytest.mark.parametrize("masked", [False, True])
def test_backgrounds_without_spread_and_large_offsets_match(masked):
    """A region of identical pixels (no spread: score 0) beside data 1e3 from the origin (cancellation in the
    integral image), with and without a mask that leaves some windows a single pixel with data."""
    z = _random_z(30, 26, 5, seed=1) + 1e3
    z[:, :9] = 7.0
    valid = None
    if masked:
        valid = np.ones(z.shape[:2], dtype=bool)
        valid[10:20, 12:] = False
        valid[14, 20] = True  # alone among no-data pixels
    new = local_rx_components(z, 3, 7, valid=valid)
    old = _reference(z, 3, 7, valid=valid)
    _assert_same_map(new, old)
    np.testing.assert_array_equal(new == 0, old == 0)


def test_a_block_the_cholesky_refuses_is_solved_by_lu(monkeypatch):
    """Where rounding leaves a covariance not positive definite, the block falls back to LU solves, as before."""
    def refuse(_):
        raise np.linalg.LinAlgError("not positive definite")

    z = _random_z(11, 13, 4, seed=2)
    monkeypatch.setattr(np.linalg, "cholesky", refuse)
    _assert_same_map(local_rx_components(z, 3, 7), _reference(z, 3, 7))


def test_too_small_a_scene_is_refused_as_before():
    with pytest.raises(DataError, match="too small"):
        local_rx_components(np.zeros((1, 1, 2)), 1, 3)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_file(), reason=f"shared scene not present at {SHARED}")
def test_a_real_scene_matches():
    """abu-urban-1 on its 30 leading components, as float32 (Stage 3's lrx head) and float64 (the baseline)."""
    z = principal_components(load_scene(SHARED).cube, 30)
    for cube in (z.astype(np.float32), z):
        _assert_same_map(local_rx_components(cube), _reference(cube))
