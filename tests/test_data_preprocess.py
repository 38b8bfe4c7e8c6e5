"""data.preprocess: band dropping, NaN repair, resampling, normalisation, chunked fitting."""

from __future__ import annotations

import numpy as np
import pytest

import data.blocks as blocks
import data.preprocess as pre
from data.preprocess import SpectralPreprocessor, normalize_cube, prepare_cube, resample_bands
from utils.errors import CheckpointError, ConfigError, DataError
from fakes import LogRecords, RowRecorder


def smooth_cube(height=9, width=8, bands=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, bands)
    weights = rng.random((height, width, 3))
    basis = np.stack([np.sin(3 * x) + 1, x**2, np.cos(2 * x) + 1])  # (3, B)
    return (weights @ basis + 0.01 * rng.standard_normal((height, width, bands))).astype(np.float32)


def test_drops_nonfinite_and_constant_bands_and_repairs_pixels():
    cube = smooth_cube()
    cube[..., 2] = np.nan  # all NaN
    cube[..., 5] = 7.0  # constant
    cube[:6, :, 8] = np.inf  # 48 of 72 pixels non-finite: mostly bad
    cube[1, 1, 0] = cube[4, 3, 6] = np.nan  # isolated
    with LogRecords.attached() as log:
        prep = SpectralPreprocessor.fit(cube, num_bands=12, source="s.npz")
    assert log.warnings() == ["s.npz: repaired 2 non-finite (NaN/inf) value(s) with their band's median; dropped 2 "
                              "mostly non-finite band(s) [2, 8]"]
    assert prep.info["dropped_nonfinite"] == [2, 8]
    assert prep.info["dropped_constant"] == [5]
    assert prep.info["kept_bands"] == 9
    assert prep.info["repaired_values"] == 2
    out = prep.transform(cube)
    assert out.shape == (9, 8, 12) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() == pytest.approx(0.0, abs=1e-6) and out.max() == pytest.approx(1.0, abs=1e-6)
    # the repair value is the band median of the finite values
    kept = list(prep.keep)
    assert prep.fill[kept.index(0)] == pytest.approx(np.nanmedian(cube[..., 0]), rel=1e-6)


def test_a_finite_cube_logs_no_repair():
    with LogRecords.attached() as log:
        SpectralPreprocessor.fit(smooth_cube(), num_bands=12)
    assert log.warnings() == []


def test_too_few_bands_left():
    cube = smooth_cube(bands=3)
    cube[..., 0] = np.nan
    cube[..., 1] = 1.0
    with pytest.raises(DataError, match="only 1 usable band"):
        SpectralPreprocessor.fit(cube, num_bands=8)


@pytest.mark.parametrize("num_bands", [2, 5, 12, 40])
def test_resample_band_count_and_end_points(num_bands):
    cube = smooth_cube(bands=12)
    out = resample_bands(cube, num_bands)
    assert out.shape == (9, 8, num_bands)
    assert np.allclose(out[..., 0], cube[..., 0], atol=1e-6)  # the grid ends on the first / last band
    assert np.allclose(out[..., -1], cube[..., -1], atol=1e-6)


def test_resample_is_linear_over_wavelength():
    wavelengths = np.array([400.0, 500.0, 800.0, 1000.0])
    spectrum = 2.0 * wavelengths + 1.0  # a line stays a line under linear interpolation
    out = resample_bands(spectrum[None, None], 7, wavelengths)
    assert np.allclose(out[0, 0], 2.0 * np.linspace(400, 1000, 7) + 1.0, rtol=1e-6)
    # over band index instead, the uneven spacing bends it
    assert not np.allclose(resample_bands(spectrum[None, None], 7)[0, 0], out[0, 0], rtol=1e-3)


def test_unsorted_wavelengths_are_sorted_and_duplicates_refused():
    cube = smooth_cube(bands=4)
    order = np.array([2, 0, 3, 1])
    wavelengths = np.array([400.0, 500.0, 600.0, 700.0])
    a = SpectralPreprocessor.fit(cube, 6, wavelengths=wavelengths).transform(cube)
    b = SpectralPreprocessor.fit(cube[..., order], 6, wavelengths=wavelengths[order]).transform(cube[..., order])
    assert np.allclose(a, b, atol=1e-6)
    with pytest.raises(DataError, match="share a wavelength"):
        SpectralPreprocessor.fit(cube, 6, wavelengths=np.array([400.0, 500.0, 500.0, 700.0]))


def test_chunked_fit_and_transform_equal_whole_cube(monkeypatch):
    cube = smooth_cube(height=23, width=6, bands=10)
    cube[3, 2, 4] = np.nan
    whole = SpectralPreprocessor.fit(cube, 7, "zscore")
    monkeypatch.setattr(blocks, "ROW_BUDGET", 6 * 10 * 2)  # two rows per chunk: 12 chunks
    assert len(list(pre.iter_row_chunks(cube))) == 12
    chunked = SpectralPreprocessor.fit(cube, 7, "zscore")
    for key in ("keep", "fill", "src_x"):
        assert np.allclose(whole.state()[key], chunked.state()[key])
    assert np.allclose(whole.norm["mean"], chunked.norm["mean"]) and np.allclose(whole.norm["std"], chunked.norm["std"])
    full = whole.transform(cube)
    pieces = np.concatenate([chunked.transform(cube[r:r + 5]) for r in range(0, 23, 5)])
    assert np.allclose(full, pieces, atol=1e-6)
    assert np.allclose(prepare_cube(cube, 7, "zscore"), full, atol=1e-6)
    flat = full.reshape(-1, 7)
    assert np.allclose(flat.mean(0), 0, atol=1e-5) and np.allclose(flat.std(0), 1, atol=1e-4)


def test_fit_reads_row_chunks_only(monkeypatch):
    cube = smooth_cube(height=30, width=4, bands=8)
    monkeypatch.setattr(blocks, "ROW_BUDGET", 4 * 8 * 3)  # three rows per chunk
    recorder = RowRecorder(cube)
    out = prepare_cube(recorder, 6)
    assert max(recorder.reads) == 3 and sum(recorder.reads) == 3 * 30  # fit: 2 passes, transform: 1
    assert np.allclose(out, prepare_cube(cube, 6), atol=1e-6)


def test_fit_on_memmap(tmp_path):
    cube = smooth_cube(height=20, width=5, bands=8)
    path = tmp_path / "c.npy"
    np.save(path, cube.astype(np.float64))
    mm = np.load(path, mmap_mode="r")
    assert np.allclose(prepare_cube(mm, 6), prepare_cube(cube, 6), atol=1e-6)


def test_state_round_trip_is_plain_types():
    cube = smooth_cube()
    prep = SpectralPreprocessor.fit(cube, 5, "minmax", wavelengths=np.linspace(400, 900, 12))
    state = prep.state()

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return type(value) in (int, float, str, bool)

    assert plain(state)
    again = SpectralPreprocessor.from_state(state)
    assert np.array_equal(again.transform(cube), prep.transform(cube))
    with pytest.raises(CheckpointError, match="lacks fill"):
        SpectralPreprocessor.from_state({k: v for k, v in state.items() if k != "fill"})


def test_transform_refuses_other_band_count():
    prep = SpectralPreprocessor.fit(smooth_cube(bands=12), 5)
    with pytest.raises(DataError, match="fitted on 12 bands; this data has 11"):
        prep.transform(smooth_cube(bands=11))


def test_normalize_cube_methods():
    cube = smooth_cube() * 100 + 5
    mm = normalize_cube(cube, "minmax")
    assert mm.min() == pytest.approx(0) and mm.max() == pytest.approx(1)
    # global min-max keeps each spectrum's shape: an affine map, the same for every band
    assert np.allclose((cube - cube.min()) / (cube.max() - cube.min()), mm, atol=1e-6)
    z = normalize_cube(cube, "zscore").reshape(-1, 12)
    assert np.allclose(z.mean(0), 0, atol=1e-5) and np.allclose(z.std(0), 1, atol=1e-4)
    with pytest.raises(ConfigError, match="unknown"):
        normalize_cube(cube, "l2")
    with pytest.raises(DataError, match="finite"):
        normalize_cube(np.full((2, 2, 3), np.nan), "minmax")


def test_bad_arguments():
    with pytest.raises(ConfigError, match="num_bands"):
        SpectralPreprocessor.fit(smooth_cube(), 1)
    with pytest.raises(DataError, match="3-D"):
        SpectralPreprocessor.fit(smooth_cube()[..., 0], 4)
    with pytest.raises(DataError, match="wavelengths"):
        SpectralPreprocessor.fit(smooth_cube(), 4, wavelengths=np.arange(3.0))
