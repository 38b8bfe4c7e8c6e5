"""anomaly/georef.py: the fused map as a cloud-optimised GeoTIFF on the scene's grid, or orthorectified through a
lookup table; NaN as no data; no GeoTIFF without a georeference."""

import contextlib
import csv
import io
import json
import logging
import warnings

import numpy as np
import pytest
import rasterio
import rasterio.features
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


# ------------------------------------------------------------------------------------------ run_inference, end to end
@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(detector checkpoint, scene path): tiny untrained models, heads that need no training (fast)."""
    from anomaly.train_anomaly import train_anomaly_detector
    from tests.test_inference import make_stage3_ckpts, scene_file, sets

    root = tmp_path_factory.mktemp("georef_run")
    ckpts = make_stage3_ckpts(root)
    scene = scene_file(root / "scene.npz")
    quick = {"head_weights.one_class": 0, "head_weights.lm_nll": 0, "head_weights.recon": 0,
             "head_weights.rarity": 0}
    return train_anomaly_detector(None, sets(root, **quick), encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene), scene


def test_inference_writes_every_output_of_a_georeferenced_scene(detector, tmp_path, monkeypatch):
    import anomaly.inference as inference
    from anomaly.run_folders import OUTPUT_FILES
    from data.io import load_scene

    ckpt, scene_path = detector
    valid = np.ones((17, 19), bool)
    valid[0, :5] = valid[16, 18] = False  # no-data pixels
    rows, cols = np.indices((17, 19))
    glt = np.full((20, 22, 2), -1, np.int32)
    glt[1:18, 2:21, 0], glt[1:18, 2:21, 1] = rows, cols
    geos = {"emit": GeoReference(glt=glt, glt_crs="EPSG:4326", glt_transform=(1e-4, 0, -118, 0, -1e-4, 34),
                                 lon=-118 + cols * 1e-4, lat=34 - rows * 1e-4),
            "utm": GeoReference(crs=UTM, transform=TRANSFORM)}

    def run(kind, **kwargs):
        def read_scene(*args):
            scene = load_scene(*args)
            scene.valid, scene.geo = valid, geos[kind]
            return scene
        monkeypatch.setattr(inference, "load_scene", read_scene)
        return inference.run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "out"),
                                       overrides=["pfa=0.02"], **kwargs)

    out = run("emit")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES + (GEOTIFF, SWATH_GEOTIFF))
    fused = np.load(out / "anomaly_map.npy")
    ortho, crs, *_ = read((out / GEOTIFF).read_bytes())
    assert crs == rasterio.crs.CRS.from_epsg(4326)
    np.testing.assert_array_equal(ortho, orthorectify(fused, glt))
    emit_table = (out / "detections.csv").read_text()

    out = run("utm", overwrite=True)  # the same folder: the swath GeoTIFF of the earlier run is not left behind
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES + (GEOTIFF,))
    fused = np.load(out / "anomaly_map.npy")
    assert fused.dtype == np.float32 and np.isnan(fused[~valid]).all() and np.isfinite(fused[valid]).all()
    heads = np.load(out / "head_maps.npz")
    assert all(np.isnan(heads[name][~valid]).all() for name in heads.files)
    on_grid, crs, transform, nodata, *_ = read((out / GEOTIFF).read_bytes())
    assert crs == rasterio.crs.CRS.from_user_input(UTM) and tuple(transform)[:6] == TRANSFORM and np.isnan(nodata)
    np.testing.assert_array_equal(on_grid, fused)

    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["detections"]
    assert summary["pfa"] == 0.02 and summary["threshold"] == pytest.approx(np.quantile(fused[valid], 0.98))
    detected = fused > summary["threshold"]  # NaN compares False
    assert summary["pixels"] == int(detected.sum()) > 0 and summary["gt_objects"] == 1
    assert 0 <= summary["gt_objects_hit"] <= 1 and 0 <= metrics["fused"]["auc"] <= 1
    table = list(csv.DictReader(io.StringIO((out / "detections.csv").read_text())))
    assert len(table) == summary["count"] and sum(int(r["area_px"]) for r in table) == summary["pixels"]
    assert all(float(r["area_m2"]) == 900 * int(r["area_px"]) for r in table)
    assert (out / "detections.csv").read_text() != emit_table  # lon / lat and areas follow the georeference
    collection = json.loads((out / "detections.geojson").read_text())
    shapes = [(feature["geometry"], 1) for feature in collection["features"]]
    drawn = rasterio.features.rasterize(shapes, out_shape=fused.shape, transform=rasterio.Affine(*TRANSFORM))
    np.testing.assert_array_equal(drawn.astype(bool), detected)
    assert (out / "anomaly_map.png").read_bytes()[:4] == b"\x89PNG"
