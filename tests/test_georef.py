"""anomaly/georef.py: the fused map as a cloud-optimised GeoTIFF on the scene's grid, or orthorectified through a
lookup table; NaN as no data; no GeoTIFF without a georeference."""

import contextlib
import logging
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from anomaly import georef
from anomaly.georef import GEOTIFF, SWATH_GEOTIFF, georeferenced_maps, geotiff_bytes, orthorectify
from data.scene import GeoReference
from tests.fakes import LogRecords
from utils.errors import DataError
from utils.logging import get_logger

UTM = "EPSG:32611"


@contextlib.contextmanager
def logged():
    """What the stage loggers log (they do not propagate to pytest's caplog)."""
    handler = LogRecords()
    root = logging.getLogger(get_logger("anomaly").parent.name)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
TRANSFORM = (30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)


def read(data: bytes):
    """(values, crs, transform, nodata, driver tags) of GeoTIFF bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(data) as memfile, memfile.open() as ds:
            return ds.read(1), ds.crs, ds.transform, ds.nodata, ds.tags(ns="IMAGE_STRUCTURE"), ds.profile


def small_map(h=17, w=19):
    values = np.arange(h * w, dtype=np.float32).reshape(h, w) / 7.0
    values[3, 4] = np.nan  # an invalid pixel
    return values


@pytest.mark.parametrize("cog", [True, False], ids=["COG driver", "tiled GTiff fallback"])
def test_geotiff_has_the_crs_transform_values_and_nan_nodata(cog, monkeypatch):
    if cog and not georef.cog_driver_available():
        pytest.skip("this GDAL has no COG driver")
    monkeypatch.setattr(georef, "cog_driver_available", lambda: cog)
    values = small_map()
    files = georeferenced_maps(values, GeoReference(crs=UTM, transform=TRANSFORM), "s")
    assert list(files) == [GEOTIFF]
    out, crs, transform, nodata, tags, profile = read(files[GEOTIFF])
    assert crs == rasterio.crs.CRS.from_user_input(UTM) and tuple(transform)[:6] == TRANSFORM
    assert np.isnan(nodata) and out.dtype == np.float32 and profile["tiled"]
    np.testing.assert_array_equal(out, values)  # NaN where NaN, every other value bit for bit
    assert np.isnan(out[3, 4]) and np.isfinite(np.delete(out.ravel(), 3 * 19 + 4)).all()
    assert tags.get("LAYOUT") == "COG"


@pytest.mark.parametrize("cog", [True, False], ids=["COG driver", "tiled GTiff fallback"])
def test_a_large_map_gets_overviews(cog, monkeypatch):
    if cog and not georef.cog_driver_available():
        pytest.skip("this GDAL has no COG driver")
    monkeypatch.setattr(georef, "cog_driver_available", lambda: cog)
    values = np.random.default_rng(0).random((1100, 1030)).astype(np.float32)
    with MemoryFile(geotiff_bytes(values, georef.base_profile(UTM, TRANSFORM))) as memfile, memfile.open() as ds:
        assert ds.overviews(1) and ds.block_shapes[0] == (512, 512)
        np.testing.assert_array_equal(ds.read(1), values)


def test_a_transform_without_crs_gives_a_tif_without_crs_and_one_warning():
    with logged() as caplog:
        files = georeferenced_maps(small_map(), GeoReference(crs=None, transform=TRANSFORM), "nocrs")
    out, crs, transform, *_ = read(files[GEOTIFF])
    assert crs is None and tuple(transform)[:6] == TRANSFORM
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "no CRS" in warned[0].getMessage() and "nocrs" in warned[0].getMessage()


@pytest.mark.parametrize("geo", [None, GeoReference()], ids=["no geo", "empty geo"])
def test_no_georeference_writes_no_tif_and_says_so_once(geo):
    with logged() as caplog:
        assert georeferenced_maps(small_map(), geo, "plain") == {}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no georeference" in lines[0] and GEOTIFF in lines[0]
    assert caplog.records[0].levelno == logging.INFO


def lookup_table():
    """A 4 x 5 orthorectified grid over a 3 x 4 swath: a rotated, partly empty mapping (-1 = no swath pixel)."""
    glt = np.full((4, 5, 2), -1, np.int32)
    for i in range(4):
        for j in range(5):
            r, c = j % 3, (i + j) % 4  # any mapping; some cells left empty below
            glt[i, j] = (r, c)
    glt[0, 0] = glt[3, 4] = (-1, -1)
    return glt


def test_orthorectification_puts_each_swath_value_in_its_cell():
    swath = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    glt = lookup_table()
    ortho = orthorectify(swath, glt)
    for i in range(4):
        for j in range(5):
            r, c = glt[i, j]
            assert np.isnan(ortho[i, j]) if r < 0 else ortho[i, j] == swath[r, c]
    with pytest.raises(DataError, match="outside the swath"):
        orthorectify(swath[:2], glt)


def test_a_lookup_table_product_gets_the_orthorectified_map_and_the_swath_map():
    swath = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.5
    swath[1, 2] = np.nan  # invalid swath pixel: NaN wherever the table shows it
    glt_transform = (0.001, 0.0, -118.0, 0.0, -0.001, 34.0)
    geo = GeoReference(glt=lookup_table(), glt_crs="EPSG:4326", glt_transform=glt_transform,
                       lon=np.zeros((3, 4)), lat=np.zeros((3, 4)))
    files = georeferenced_maps(swath, geo, "emit")
    assert set(files) == {GEOTIFF, SWATH_GEOTIFF}
    ortho, crs, transform, *_ = read(files[GEOTIFF])
    assert crs == rasterio.crs.CRS.from_epsg(4326) and tuple(transform)[:6] == glt_transform
    np.testing.assert_array_equal(ortho, orthorectify(swath, geo.glt))
    assert np.isnan(ortho[0, 0]) and np.isnan(ortho[3, 4])
    on_swath, swath_crs, *_ = read(files[SWATH_GEOTIFF])
    assert swath_crs is None
    np.testing.assert_array_equal(on_swath, swath)
