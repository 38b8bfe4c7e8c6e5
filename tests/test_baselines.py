"""anomaly.baselines: agreement with direct per-pixel formulas, chunking, memmaps, errors."""

import numpy as np
import pytest
import spectral

from anomaly.baselines import crd, global_rx, local_rx, principal_components, scene_stats, truncated_precision
from utils.errors import ConfigError, DataError
from utils.metrics import detection_metrics


def _scene(h=12, w=14, b=6, seed=0):
    """Correlated background plus three implanted anomalous pixels: (cube (h,w,b) float32, gt)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(b, b))
    cube = (rng.normal(size=(h, w, b)) @ mix + 100.0).astype(np.float32)
    gt = np.zeros((h, w), dtype=np.uint8)
    for r, c in [(3, 4), (8, 10), (6, 2)]:
        cube[r, c] += 6.0 * rng.normal(size=b).astype(np.float32)
        gt[r, c] = 1
    return cube, gt


def test_global_rx_matches_mahalanobis_formula():
    cube, gt = _scene()
    x = cube.reshape(-1, cube.shape[-1]).astype(np.float64)
    diff = x - x.mean(0)
    expect = np.einsum("pb,bc,pc->p", diff, np.linalg.pinv(np.cov(x.T)), diff).reshape(gt.shape)
    np.testing.assert_allclose(global_rx(cube), expect, rtol=1e-4)
    np.testing.assert_allclose(global_rx(cube, chunk_rows=5), expect, rtol=1e-4)
    assert detection_metrics(global_rx(cube), gt)["auc"] > 0.95


def test_global_rx_affine_invariant_and_singular_bands():
    cube, _ = _scene()
    base = global_rx(cube)
    np.testing.assert_allclose(global_rx(cube * 0.01 - 3.0), base, rtol=1e-3)
    dup = np.concatenate([cube, cube[..., :1], np.full(cube.shape[:2] + (1,), 5.0, np.float32)], axis=-1)
    np.testing.assert_allclose(global_rx(dup), base, rtol=1e-3)  # collinear + constant band: pinv


def test_global_rx_on_leading_components_is_rx_of_the_projected_cube():
    cube, gt = _scene(b=8)
    z = principal_components(cube, 3).reshape(-1, 3)  # (P, 3) on the 3 leading axes
    expect = (z ** 2 / z.var(axis=0, ddof=1)).sum(-1).reshape(gt.shape)  # the axes are uncorrelated
    np.testing.assert_allclose(global_rx(cube, n_components=3), expect, rtol=1e-4)
    np.testing.assert_allclose(global_rx(cube, n_components=8), global_rx(cube), rtol=1e-5)  # every axis
    assert not np.allclose(global_rx(cube, n_components=3), global_rx(cube), rtol=1e-2)


def test_truncated_precision_drops_null_directions_and_checks_its_argument():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(5, 2))
    cov = basis @ basis.T  # (5, 5) of rank 2
    np.testing.assert_allclose(truncated_precision(cov, 4), np.linalg.pinv(cov), atol=1e-8)  # 3 zero variances cut
    np.testing.assert_allclose(truncated_precision(cov, 0), np.linalg.pinv(cov), atol=1e-8)
    with pytest.raises(ConfigError, match="n_components"):
        truncated_precision(cov, -1)


def test_global_rx_reads_a_memmap(tmp_path):
    cube, _ = _scene()
    np.save(tmp_path / "c.npy", cube)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    np.testing.assert_allclose(global_rx(mm, chunk_rows=3), global_rx(cube), rtol=1e-5)


def test_scene_stats_match_spectral():
    cube, _ = _scene()
    # spectral averages a float32 cube in float32 (its mean_cov reshapes the uncast image): give it float64
    ours, ref = scene_stats(cube, chunk_rows=4), spectral.calc_stats(cube.astype(np.float64))
    np.testing.assert_allclose(ours.mean, ref.mean, rtol=1e-9)
    np.testing.assert_allclose(ours.cov, ref.cov, rtol=1e-6, atol=1e-8)


def _local_rx_loop(z, inner, outer, ridge=1e-6):
    h, w, d = z.shape
    out = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            rows = range(max(0, r - outer // 2), min(h, r + outer // 2 + 1))
            cols = range(max(0, c - outer // 2), min(w, c + outer // 2 + 1))
            bg = np.array([z[i, j] for i in rows for j in cols
                           if max(abs(i - r), abs(j - c)) > inner // 2])
            cov = np.cov(bg.T)
            cov += ridge * np.trace(cov) / d * np.eye(d)
            diff = z[r, c] - bg.mean(0)
            out[r, c] = diff @ np.linalg.solve(cov, diff)
    return out


@pytest.mark.parametrize("inner, outer, chunk_rows, block_pixels", [(3, 7, None, None), (1, 5, 4, None), (3, 9, 2, None),
                                                                  (3, 7, None, 3), (3, 7, 5, 30)])
def test_local_rx_matches_per_pixel_loop(inner, outer, chunk_rows, block_pixels, monkeypatch):
    if block_pixels is not None:  # pixels solved together: 3 = part of a row, 30 = two rows of 14
        monkeypatch.setattr("anomaly.baselines.BLOCK_PIXELS", block_pixels)
    cube, _ = _scene()
    z = principal_components(cube, 4)
    expect = _local_rx_loop(z, inner, outer)
    got = local_rx(cube, inner=inner, outer=outer, n_components=4, chunk_rows=chunk_rows)
    np.testing.assert_allclose(got, expect, rtol=1e-4)


def test_local_rx_interior_matches_spectral_windowed_rx():
    cube, _ = _scene(h=15, w=15)
    z = principal_components(cube, 3)
    ref = spectral.rx(z, window=(3, 7))
    got = local_rx(cube, inner=3, outer=7, n_components=3, ridge=0.0)
    np.testing.assert_allclose(got[3:-3, 3:-3], ref[3:-3, 3:-3], rtol=1e-4)


def _crd_loop(cube, inner, outer, lam, jitter):
    x = cube.astype(np.float64)
    x = (x - x.min()) / (x.max() - x.min())
    h, w, _ = x.shape
    t = outer // 2
    out = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            nb = [x[i, j] if (0 <= i < h and 0 <= j < w) else np.zeros(x.shape[-1])
                  for i in range(r - t, r + t + 1) for j in range(c - t, c + t + 1)
                  if max(abs(i - r), abs(j - c)) > inner // 2]
            xs = np.array(nb)  # (s, B)
            y = x[r, c]
            gram = xs @ xs.T
            reg = lam * np.diag(((xs - y) ** 2).sum(1)) + jitter * np.trace(gram) / len(xs) * np.eye(len(xs))
            alpha = np.linalg.solve(gram + reg, xs @ y)
            out[r, c] = np.linalg.norm(y - xs.T @ alpha)
    return out


def test_crd_matches_per_pixel_loop_and_detects():
    cube, gt = _scene(h=10, w=11, b=30)
    got = crd(cube, inner=1, outer=5, lam=1e-2, batch_pixels=17)
    np.testing.assert_allclose(got, _crd_loop(cube, 1, 5, 1e-2, 1e-9), rtol=1e-4, atol=1e-6)
    assert detection_metrics(got, gt)["auc"] > 0.9


def test_crd_survives_duplicated_spectra():
    cube, _ = _scene(b=30)
    cube[:, :] = cube[0, 0]  # every window pixel equals the tested one
    assert np.all(np.isfinite(crd(cube, inner=1, outer=3)))


@pytest.mark.parametrize("fn, kwargs, error, message", [
    (local_rx, {"inner": 4, "outer": 9}, ConfigError, "odd"),
    (local_rx, {"inner": 9, "outer": 7}, ConfigError, "smaller"),
    (local_rx, {"n_components": 7}, ConfigError, "n_components"),
    (crd, {"inner": 3, "outer": 3}, ConfigError, "smaller"),
    (crd, {"lam": 0.0}, ConfigError, "lam"),
])
def test_argument_errors(fn, kwargs, error, message):
    cube, _ = _scene()
    with pytest.raises(error, match=message):
        fn(cube, **kwargs)


def test_data_errors():
    with pytest.raises(DataError, match=r"\(H, W, B\)"):
        global_rx(np.zeros((4, 4)))
    cube, _ = _scene()
    cube[2, 3, 1] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        global_rx(cube)
    with pytest.raises(DataError, match="non-finite"):
        crd(cube)


@pytest.mark.parametrize("rx_components", [0, 3])
def test_the_rx_heads_are_the_baselines_on_the_prepared_cube(rx_components):
    """Stage 3's grx / lrx heads (anomaly.scoring.rx_head_maps, which reads the cube in row chunks) score as the
    baselines do: grx as global RX on the rx_components leading principal components, lrx as local RX."""
    from anomaly.scoring import rx_head_maps

    cube, _ = _scene(b=8)
    maps = rx_head_maps(cube, None, 8, ["grx", "lrx"], {"inner": 3, "outer": 7, "n_components": 4}, rx_components)
    np.testing.assert_allclose(maps["grx"], global_rx(cube, n_components=rx_components), rtol=1e-4)
    np.testing.assert_allclose(maps["lrx"], local_rx(cube, inner=3, outer=7, n_components=4), rtol=1e-4)


def test_the_rx_heads_prepare_a_one_chunk_scene_once():
    """grx and lrx share one read of a scene that fits in a chunk: each raw row goes through the preprocessing once
    (a larger scene is read once for its statistics and once to score)."""
    from anomaly.scoring import rx_head_maps

    cube, _ = _scene(b=8)
    prepared = []

    def transform(rows):  # (r, W, B) -> (r, W, B), counting the rows it prepares
        prepared.append(len(rows))
        return rows

    maps = rx_head_maps(cube, transform, 8, ["grx", "lrx"], {"inner": 3, "outer": 7, "n_components": 4}, 3)
    assert sum(prepared) == len(cube)
    np.testing.assert_array_equal(maps["grx"], rx_head_maps(cube, None, 8, ["grx"], {"n_components": 4}, 3)["grx"])
