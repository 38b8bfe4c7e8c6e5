"""anomaly/detections.py: the threshold from a false-alarm rate, connected objects as a table and as polygons
that fall on the detected pixels, gt objects hit."""

import csv
import io
import json

import numpy as np
import pytest
import rasterio.features
from rasterio.transform import Affine

from anomaly.detections import (COLUMNS, PIXEL_NOTE, detection_summary, detections_csv, detections_geojson,
                                find_detections, gt_objects_hit, polygon_grid, score_threshold)
from data.scene import GeoReference
from utils.errors import DataError

UTM = "EPSG:32611"
TRANSFORM = (30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)


def two_blobs():
    """A 20 x 30 map of low scores with a 3 x 4 blob (score 5) and an L-shaped 5-pixel blob (score 9, one pixel
    joined only diagonally) and one NaN (no data) pixel."""
    scores = np.full((20, 30), 0.1, np.float32)
    scores[2:5, 3:7] = 5.0  # 12 px, centroid (3, 4.5)
    for r, c in [(10, 20), (11, 20), (12, 20), (12, 21), (13, 22)]:  # (13, 22) touches (12, 21) diagonally
        scores[r, c] = 9.0
    scores[12, 21] = 8.0
    scores[0, 0] = np.nan
    return scores


def test_two_blobs_give_two_rows_with_areas_centroids_and_scores():
    found = find_detections(two_blobs(), GeoReference(crs=UTM, transform=TRANSFORM), threshold=1.0)
    assert found.count == 2 and found.pfa is None and found.threshold == 1.0
    first, second = found.rows
    assert (first["id"], first["area_px"], first["row"], first["col"]) == (1, 12, 3.0, 4.5)
    assert (first["max_score"], first["mean_score"]) == (5.0, 5.0)
    assert (second["id"], second["area_px"]) == (2, 5)
    assert (second["row"], second["col"]) == (pytest.approx(58 / 5), pytest.approx(103 / 5))
    assert second["max_score"] == 9.0 and second["mean_score"] == pytest.approx(44 / 5)
    assert first["area_m2"] == 12 * 900.0 and second["area_m2"] == 5 * 900.0
    # lon / lat of the centroid through the UTM zone 11N transform: by the central meridian -117, near 36.1 N
    assert -117.01 < first["lon"] < -116.99 and 36.1 < first["lat"] < 36.2
    assert first["lon"] < second["lon"] and first["lat"] > second["lat"]  # east and south of the first
    table = list(csv.DictReader(io.StringIO(detections_csv(found))))
    assert tuple(table[0]) == COLUMNS and [int(r["area_px"]) for r in table] == [12, 5]
    assert float(table[1]["max_score"]) == 9.0


def test_lon_lat_from_the_per_pixel_arrays_and_no_area_without_a_metric_crs():
    scores = two_blobs()
    lon, lat = np.meshgrid(np.arange(30) * 0.01 - 118.0, 34.0 - np.arange(20) * 0.01)
    found = find_detections(scores, GeoReference(lon=lon, lat=lat), threshold=1.0)
    first = found.rows[0]
    assert first["lon"] == pytest.approx(-118.0 + 0.045) and first["lat"] == pytest.approx(34.0 - 0.03)
    assert first["area_m2"] is None
    geographic = find_detections(scores, GeoReference(crs="EPSG:4326", transform=(0.01, 0, -118, 0, -0.01, 34)),
                                 threshold=1.0)
    assert geographic.rows[0]["area_m2"] is None and geographic.rows[0]["lon"] == pytest.approx(-118.0 + 0.05)
    plain = find_detections(scores, None, threshold=1.0)
    assert plain.rows[0]["lon"] is None and plain.rows[0]["area_m2"] is None
    assert "lon" in detections_csv(plain).splitlines()[0] and ",,," in detections_csv(plain).splitlines()[1]


def rasterized(feature, shape, transform):
    return rasterio.features.rasterize([(feature["geometry"], 1)], out_shape=shape, transform=transform,
                                       fill=0, dtype="uint8").astype(bool)


@pytest.mark.parametrize("geo", [GeoReference(crs=UTM, transform=TRANSFORM), None,
                                 GeoReference(crs=None, transform=TRANSFORM)],
                         ids=["utm", "no geo", "no crs"])
def test_each_polygon_falls_on_its_detected_pixels(geo):
    found = find_detections(two_blobs(), geo, threshold=1.0)
    collection = json.loads(detections_geojson(found, geo))
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    transform = Affine(*TRANSFORM) if geo is not None else Affine.identity()
    for feature, row in zip(collection["features"], found.rows):
        assert feature["properties"]["area_px"] == row["area_px"] and feature["id"] == row["id"]
        np.testing.assert_array_equal(rasterized(feature, found.labels.shape, transform), found.labels == row["id"])
        assert ("note" in feature["properties"]) == (geo is None)
    if geo is None:
        assert collection["features"][0]["properties"]["note"] == PIXEL_NOTE
        assert collection["features"][0]["geometry"]["coordinates"][0][0] == [3.0, 2.0]  # (x = col, y = row)
    if geo is not None and geo.crs is not None:
        assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32611"
    else:
        assert "crs" not in collection


def test_lookup_table_polygons_lie_on_the_orthorectified_grid():
    scores = two_blobs()
    glt = np.full((25, 35, 2), -1, np.int32)  # the swath shifted by (2, 3) cells and transposed nowhere else
    rows, cols = np.indices((20, 30))
    glt[2:22, 3:33, 0], glt[2:22, 3:33, 1] = rows, cols
    glt_transform = (0.001, 0.0, -118.0, 0.0, -0.001, 34.0)
    geo = GeoReference(glt=glt, glt_crs="EPSG:4326", glt_transform=glt_transform)
    found = find_detections(scores, geo, threshold=1.0)
    collection = json.loads(detections_geojson(found, geo))
    assert "crs" not in collection  # EPSG:4326: GeoJSON's own lon / lat
    labels, transform, crs = polygon_grid(found, geo)
    assert labels.shape == (25, 35) and crs == "EPSG:4326"
    for feature, row in zip(collection["features"], found.rows):
        on_grid = rasterized(feature, labels.shape, transform)
        np.testing.assert_array_equal(on_grid, labels == row["id"])
        np.testing.assert_array_equal(on_grid[2:22, 3:33], found.labels == row["id"])


@pytest.mark.parametrize("pfa, expected", [(1e-3, 10), (1e-2, 100), (0.05, 500)])
def test_pfa_picks_that_share_of_the_valid_pixels(pfa, expected):
    rng = np.random.default_rng(0)
    scores = rng.permutation(10_000).astype(np.float64).reshape(100, 100)
    found = find_detections(scores, None, pfa=pfa)
    assert int(found.mask.sum()) == expected and found.pfa == pfa
    # invalid pixels (NaN) are left out of the distribution and never detected
    masked = scores.copy()
    masked[:50] = np.nan
    found = find_detections(masked, None, pfa=pfa)
    assert int(found.mask.sum()) == expected // 2 and not found.mask[:50].any()
    assert found.threshold == np.quantile(masked[50:], 1 - pfa)


def test_threshold_errors():
    with pytest.raises(DataError, match="no valid"):
        score_threshold(np.full((3, 3), np.nan), pfa=1e-3)
    with pytest.raises(DataError, match="pfa"):
        score_threshold(np.ones((3, 3)), pfa=0.0)
    assert score_threshold(np.full((3, 3), np.nan), threshold=2.0) == 2.0


def test_gt_objects_hit_and_the_summary():
    scores = two_blobs()
    gt = np.zeros(scores.shape, np.uint8)
    gt[4, 6] = 1  # overlaps the first blob by one pixel
    gt[15:17, 25:27] = 1  # missed
    gt[11, 20] = gt[12, 21] = 1  # part of the second blob: one object (diagonal neighbours, 8-connectivity)
    found = find_detections(scores, None, threshold=1.0)
    assert gt_objects_hit(found, gt) == (3, 2)
    assert detection_summary(found, gt) == {"threshold": 1.0, "pfa": None, "count": 2, "pixels": 17,
                                            "gt_objects": 3, "gt_objects_hit": 2}
    assert "gt_objects" not in detection_summary(found, None)


def test_nothing_above_the_threshold_gives_empty_files():
    found = find_detections(np.zeros((4, 5)), None, threshold=1.0)
    assert found.count == 0 and detections_csv(found) == ",".join(COLUMNS) + "\n"
    assert json.loads(detections_geojson(found, None))["features"] == []
