"""Sensor products scored end to end through main_anomaly.py: the same scene written as GeoTIFF, ENVI with a bad band
and EMIT NetCDF gives the .npz's map (of the scene without the bad band), bit for bit; pixels a product marks as no
data come out NaN and the georeferenced map keeps the source's CRS and transform."""

import json

import numpy as np
import pytest
import rasterio
import xarray as xr

from main_anomaly import build_parser, main
from tests.test_inference import make_stage3_ckpts
from tests.test_products import _write_envi, _write_tiff

pytestmark = pytest.mark.slow
H, W, B = 17, 19, 30


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_stage3_ckpts(tmp_path_factory.mktemp("ckpts")) / "enc.pth"


def scene_cube(bands=B):
    """A smooth background with a 3 x 3 target, all values positive (no fill value)."""
    rng = np.random.default_rng(0)
    base = 1.5 + np.sin(np.linspace(0, 3, bands))[None, None] + 0.3 * rng.random((H, W, 1))
    cube = (base + 0.02 * rng.standard_normal((H, W, bands))).astype(np.float32)
    cube[6:9, 8:11] = 1.5 + np.cos(np.linspace(0, 3, bands))
    return cube


def score(encoder, path, root):
    """main_anomaly.py on `path`: (fused map, metrics, output folder)."""
    out = root / "out"
    args = build_parser().parse_args(["--config", "configs/anomaly.yaml", "--encoder_ckpt", str(encoder),
                                      "--data_path", str(path), "--out_dir", str(out),
                                      "--set", f"output_dir={root / 'det'}", "--set", "lm_block=2",
                                      "--set", "local_rx.inner=3", "--set", "local_rx.outer=5"])
    main(args)
    return np.load(out / "anomaly_map.npy"), json.loads((out / "metrics.json").read_text()), out


def write_npz(path, cube, wavelengths=None):
    arrays = {"cube": cube} if wavelengths is None else {"cube": cube, "wavelengths": wavelengths}
    np.savez(path, **arrays)
    return path


def test_a_geotiff_scores_as_its_npz_and_writes_a_georeferenced_map(encoder, tmp_path):
    cube = scene_cube()
    (tmp_path / "npz").mkdir()
    reference, _, _ = score(encoder, write_npz(tmp_path / "npz" / "scene.npz", cube), tmp_path / "npz")
    fused, metrics, out = score(encoder, _write_tiff(tmp_path / "scene.tif", cube), tmp_path / "tif")
    np.testing.assert_array_equal(fused, reference)
    with rasterio.open(out / "anomaly_map.tif") as tif:
        assert tif.crs.to_epsg() == 32611 and tif.transform.c == 300000.0 and tif.transform.a == 30.0
        np.testing.assert_array_equal(tif.read(1), fused)
    assert metrics["bad_bands"] == [] and metrics["nodata_pixels"] == 0


def test_envi_with_a_bad_band_scores_as_the_scene_without_it(encoder, tmp_path):
    cube = scene_cube()
    bad = 11
    keep = [b for b in range(B) if b != bad]
    (tmp_path / "npz").mkdir()
    reference, _, _ = score(encoder, write_npz(tmp_path / "npz" / "scene.npz", cube[:, :, keep]), tmp_path / "npz")
    bbl = [0 if b == bad else 1 for b in range(B)]
    fused, metrics, _ = score(encoder, _write_envi(tmp_path / "scene.hdr", cube, bbl=bbl), tmp_path / "envi")
    np.testing.assert_array_equal(fused, reference)
    assert [b["index"] for b in metrics["bad_bands"]] == [bad]


def test_emit_with_bad_wavelengths_and_fill_pixels(encoder, tmp_path):
    cube = scene_cube()
    wavelengths = np.linspace(400, 2400, B).astype(np.float32)
    good = np.ones(B, np.uint8)
    good[[3, 20]] = 0
    keep = np.flatnonzero(good)
    (tmp_path / "npz").mkdir()
    reference, _, _ = score(encoder, write_npz(tmp_path / "npz" / "scene.npz", cube[:, :, keep], wavelengths[keep]),
                            tmp_path / "npz")

    def emit(path, values):
        xr.Dataset({"reflectance": (("downtrack", "crosstrack", "bands"), values, {"_FillValue": -9999.0})}).to_netcdf(
            path, engine="h5netcdf")
        xr.Dataset({"wavelengths": ("bands", wavelengths), "good_wavelengths": ("bands", good)}).to_netcdf(
            path, mode="a", group="sensor_band_parameters", engine="h5netcdf")
        xr.Dataset({}).to_netcdf(path, mode="a", group="location", engine="h5netcdf")
        return path

    fused, metrics, _ = score(encoder, emit(tmp_path / "scene.nc", cube), tmp_path / "emit")
    np.testing.assert_array_equal(fused, reference)  # no pixel masked: bit for bit
    assert sorted(b["index"] for b in metrics["bad_bands"]) == [3, 20]
    holed = cube.copy()
    holed[:, :3] = -9999.0  # a swath edge of fill values
    fused, metrics, _ = score(encoder, emit(tmp_path / "holed.nc", holed), tmp_path / "holed")
    assert np.isnan(fused[:, :3]).all() and np.isfinite(fused[:, 3:]).all()
    assert metrics["nodata_pixels"] == 3 * H and metrics["preprocessing"]["nodata_pixels"] == 3 * H
