"""Detected objects: the fused map thresholded at a false-alarm rate on the scene's own scores, as a table and as
polygons.

    found = find_detections(fused, scene.geo, pfa=1e-3)                 # or threshold=2.5
    files = {"detections.csv": detections_csv(found), "detections.geojson": detections_geojson(found, scene.geo)}
    summary = detection_summary(found, scene.gt)                        # for metrics.json

The threshold is the (1 - pfa) quantile of the valid (finite) pixels' fused scores, so about `pfa` of them lie
above it (the scene's own score distribution stands in for the background's), or an explicit score. The pixels
above it are grouped into objects by 8-connectivity (scipy.ndimage.label). Each object gets: `id` (its label,
1..N), `row` / `col` (centroid, pixel indices), `lon` / `lat` (from the scene's per-pixel lon / lat, or its
centroid taken through the CRS and transform to EPSG:4326; empty when unknown), `area_px`, `area_m2` (pixels times
the pixel area, when the CRS is projected in metres; empty otherwise), `max_score` and `mean_score`.
The GeoJSON holds one polygon (or multipolygon) per object, from rasterio.features.shapes on the labels, in the
scene's CRS (a lookup-table product: the labels orthorectified through the table, in its CRS); a scene without a
georeference gets polygons in pixel coordinates (x = column, y = row) and a note in each feature's properties.
With a gt mask, `gt_objects` counts its 8-connected objects and `gt_objects_hit` those a detected pixel touches.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio.crs
import rasterio.features
import rasterio.transform
import rasterio.warp
from rasterio.transform import Affine
from scipy import ndimage

from anomaly.georef import orthorectify
from data.scene import GeoReference
from utils.errors import DataError

CSV_NAME = "detections.csv"
GEOJSON_NAME = "detections.geojson"
DETECTION_FILES = (CSV_NAME, GEOJSON_NAME)
COLUMNS = ("id", "row", "col", "lon", "lat", "area_px", "area_m2", "max_score", "mean_score")
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity
PIXEL_NOTE = "no georeference: coordinates are pixels, x = column, y = row (the top-left corner of pixel (0, 0) at 0, 0)"


@dataclass
class Detections:
    """Connected components above a threshold. labels: (H, W) int32, 0 = background, k = object k (1..count);
    rows: one dict per object with COLUMNS' keys (None where unknown)."""

    threshold: float
    pfa: float | None
    labels: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, the detected pixels."""
        return self.labels > 0


def score_threshold(scores: np.ndarray, pfa: float | None = None, threshold: float | None = None) -> float:
    """`threshold` when given, else the (1 - pfa) quantile of the finite scores (NaN = no data)."""
    if threshold is not None:
        return float(threshold)
    if pfa is None or not 0 < pfa < 1:
        raise DataError(f"pfa must lie in (0, 1) when no detection_threshold is given, got {pfa}")
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise DataError("the map has no valid (finite) pixel: no detection threshold")
    return float(np.quantile(finite, 1.0 - pfa))


def _projected_metres(crs: str | None) -> bool:
    if crs is None:
        return False
    parsed = rasterio.crs.CRS.from_user_input(crs)
    return bool(parsed.is_projected) and str(parsed.linear_units).lower() in {"metre", "meter", "m", "metres",
                                                                               "meters"}


def pixel_area_m2(geo: GeoReference | None) -> float | None:
    """The area of one pixel in square metres (|det| of the transform), when the CRS is projected in metres."""
    if geo is None or geo.transform is None or not _projected_metres(geo.crs):
        return None
    a, b, _, d, e, _ = geo.transform[:6]
    return abs(a * e - b * d)


def _lon_lat(geo: GeoReference | None, labels: np.ndarray, count: int, rows: np.ndarray, cols: np.ndarray,
             sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Each object's (lon, lat): the mean of its pixels' lon / lat, else its centroid through CRS + transform."""
    if geo is None:
        return None
    if geo.lon is not None and geo.lat is not None:
        flat = labels.ravel()
        lon = np.bincount(flat, np.asarray(geo.lon, np.float64).ravel(), count + 1)[1:] / sizes
        lat = np.bincount(flat, np.asarray(geo.lat, np.float64).ravel(), count + 1)[1:] / sizes
        return lon, lat
    if geo.crs is not None and geo.transform is not None:
        xs, ys = rasterio.transform.xy(Affine(*geo.transform[:6]), rows, cols, offset="center")
        lon, lat = rasterio.warp.transform(geo.crs, "EPSG:4326", np.atleast_1d(xs).tolist(),
                                           np.atleast_1d(ys).tolist())
        return np.asarray(lon), np.asarray(lat)
    return None


def find_detections(scores: np.ndarray, geo: GeoReference | None = None, pfa: float | None = None,
                    threshold: float | None = None) -> Detections:
    """The objects of `scores` (H, W; NaN = no data) above `threshold`, or above the (1 - pfa) quantile."""
    scores = np.asarray(scores)
    thr = score_threshold(scores, pfa, threshold)
    with np.errstate(invalid="ignore"):
        above = np.isfinite(scores) & (scores > thr)
    labels, count = ndimage.label(above, structure=EIGHT)
    labels = labels.astype(np.int32)
    found = Detections(thr, None if threshold is not None else pfa, labels)
    if count == 0:
        return found
    flat = labels.ravel()
    values = np.where(above, scores, 0.0).astype(np.float64).ravel()
    sizes = np.bincount(flat, minlength=count + 1)[1:].astype(np.float64)
    row_index, col_index = np.indices(labels.shape)
    rows = np.bincount(flat, row_index.ravel(), count + 1)[1:] / sizes
    cols = np.bincount(flat, col_index.ravel(), count + 1)[1:] / sizes
    means = np.bincount(flat, values, count + 1)[1:] / sizes
    maxima = np.atleast_1d(ndimage.maximum(scores, labels, np.arange(1, count + 1)))
    lon_lat = _lon_lat(geo, labels, count, rows, cols, sizes)
    area = pixel_area_m2(geo)
    for k in range(count):
        found.rows.append({
            "id": k + 1, "row": round(float(rows[k]), 3), "col": round(float(cols[k]), 3),
            "lon": None if lon_lat is None else float(lon_lat[0][k]),
            "lat": None if lon_lat is None else float(lon_lat[1][k]),
            "area_px": int(sizes[k]), "area_m2": None if area is None else float(sizes[k] * area),
            "max_score": float(maxima[k]), "mean_score": float(means[k])})
    return found


def detections_csv(found: Detections) -> str:
    """The table as CSV text, one row per object, COLUMNS' order; an unknown value is an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in found.rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})
    return buffer.getvalue()


def _crs_member(crs: str) -> dict[str, Any] | None:
    """GeoJSON 2008's named-CRS member (RFC 7946 assumes lon / lat WGS 84; GDAL and QGIS read this member)."""
    parsed = rasterio.crs.CRS.from_user_input(crs)
    epsg = parsed.to_epsg()
    if epsg == 4326:
        return None
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg is not None else parsed.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def polygon_grid(found: Detections, geo: GeoReference | None) -> tuple[np.ndarray, Affine, str | None]:
    """The labels the polygons are traced on, with their transform and CRS: the scene's grid; a lookup-table
    product's labels orthorectified onto the table's grid; pixel coordinates (identity) without a georeference."""
    if geo is not None and geo.glt is not None and geo.glt_transform is not None:
        return orthorectify(found.labels, geo.glt, fill=0), Affine(*geo.glt_transform[:6]), geo.glt_crs
    if geo is not None and geo.transform is not None:
        return found.labels, Affine(*geo.transform[:6]), geo.crs
    return found.labels, Affine.identity(), None


def detections_geojson(found: Detections, geo: GeoReference | None) -> str:
    """A GeoJSON FeatureCollection: one (multi)polygon per object, its table row as properties."""
    labels, transform, crs = polygon_grid(found, geo)
    parts: dict[int, list] = {}
    for geometry, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=8, transform=transform):
        parts.setdefault(int(value), []).append(geometry["coordinates"])
    pixels = geo is None or (geo.transform is None and geo.glt_transform is None)
    features = []
    for row in found.rows:
        rings = parts.get(row["id"], [])
        if not rings:  # an object that no lookup-table cell shows
            geometry = None
        elif len(rings) == 1:
            geometry = {"type": "Polygon", "coordinates": rings[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": rings}
        properties = dict(row)
        if pixels:
            properties["note"] = PIXEL_NOTE
        features.append({"type": "Feature", "id": row["id"], "geometry": geometry, "properties": properties})
    collection: dict[str, Any] = {"type": "FeatureCollection", "threshold": found.threshold, "pfa": found.pfa}
    if crs is not None and (member := _crs_member(crs)) is not None:
        collection["crs"] = member
    collection["features"] = features
    return json.dumps(collection, indent=1) + "\n"


def gt_objects_hit(found: Detections, gt: np.ndarray) -> tuple[int, int]:
    """(gt objects, gt objects hit): the gt mask's 8-connected objects, and those a detected pixel falls on."""
    gt_labels, objects = ndimage.label(np.asarray(gt) > 0, structure=EIGHT)
    hit = np.unique(gt_labels[found.mask & (gt_labels > 0)])
    return int(objects), int(hit.size)


def detection_summary(found: Detections, gt: np.ndarray | None) -> dict[str, Any]:
    """metrics.json's "detections": threshold, pfa (None for an explicit threshold), objects and pixels found,
    and with a gt mask how many of its objects were hit."""
    summary: dict[str, Any] = {"threshold": found.threshold, "pfa": found.pfa, "count": found.count,
                               "pixels": int(found.mask.sum())}
    if gt is not None:
        summary["gt_objects"], summary["gt_objects_hit"] = gt_objects_hit(found, gt)
    return summary
