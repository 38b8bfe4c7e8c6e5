"""The fused map as a georeferenced, cloud-optimised GeoTIFF a GIS can lay over anything.

    files = georeferenced_maps(fused, scene.geo, scene.name)   # {"anomaly_map.tif": bytes, ...} or {}
    write_files({folder / name: data for name, data in files.items()})

A scene with a CRS and an affine transform gets `anomaly_map.tif` on its own grid. A swath product located by a
geolocation lookup table (EMIT: `GeoReference.glt`) gets the map orthorectified through the table as
`anomaly_map.tif` (the table's grid, `glt_crs` / `glt_transform`) and the map on the swath grid beside it as
`anomaly_map_swath.tif` (no CRS: its pixels are not on a regular grid). No-data is NaN (the GeoTIFF's nodata
value), at the scene's invalid pixels and at cells of the lookup table that no swath pixel fills. A scene without
a georeference gets no GeoTIFF (one log line says so); a transform without a CRS gives a GeoTIFF without one and
one WARNING. Every GeoTIFF is rendered into bytes in memory (rasterio.io.MemoryFile), so the caller writes it
with the run's other outputs through utils/atomic.py: all files or none.

The GeoTIFF is written with GDAL's COG driver (tiles of 512, deflate, overviews for large maps) when this GDAL
has it, else as a tiled GTiff with overviews copied in front of the data (`copy_src_overviews`), the same layout.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from anomaly.run_folders import GEO_OUTPUT_FILES
from data.scene import GeoReference
from utils.errors import DataError
from utils.logging import get_logger

GEOTIFF, SWATH_GEOTIFF = GEO_OUTPUT_FILES
_BLOCK = 512  # COG tile side; GDAL's default for the COG driver
_MIN_OVERVIEW = 256  # overviews halve the map until its longer side is at most this
log = get_logger("anomaly")


def cog_driver_available() -> bool:
    """True when this GDAL has the COG driver (GDAL >= 3.1)."""
    with rasterio.Env() as env:
        return "COG" in env.drivers()


def base_profile(crs: str | None, transform: tuple[float, ...] | Affine | None) -> dict[str, Any]:
    """A rasterio profile holding where a map lies: its CRS (None = none) and affine transform."""
    profile: dict[str, Any] = {}
    if crs is not None:
        profile["crs"] = rasterio.crs.CRS.from_user_input(crs)
    if transform is not None:
        profile["transform"] = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    return profile


def _overview_factors(height: int, width: int) -> list[int]:
    factors, factor = [], 2
    while max(height, width) / factor >= _MIN_OVERVIEW // 2 and max(height, width) > _MIN_OVERVIEW:
        factors.append(factor)
        factor *= 2
    return factors


def geotiff_bytes(values: np.ndarray, profile: dict[str, Any]) -> bytes:
    """A (H, W) map as the bytes of a one-band float32 cloud-optimised GeoTIFF, nodata NaN; `profile` (a rasterio
    profile: crs, transform) is copied and updated with what the map needs."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise DataError(f"a GeoTIFF map must be (H, W), got shape {values.shape}")
    height, width = values.shape
    profile = dict(profile)
    profile.update(count=1, dtype="float32", height=height, width=width, nodata=float("nan"), compress="deflate")
    with warnings.catch_warnings():  # the swath-grid map has no transform on purpose
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if not cog_driver_available():
            return _tiled_gtiff_bytes(values, profile)
        profile.update(driver="COG", blocksize=_BLOCK, overview_resampling="nearest")
        with MemoryFile() as memfile:
            with memfile.open(**profile) as dst:
                dst.write(values, 1)
            return memfile.read()


def _tiled_gtiff_bytes(values: np.ndarray, profile: dict[str, Any]) -> bytes:
    """The COG layout without the COG driver: a tiled GTiff with overviews, copied so the overviews lead."""
    height, width = values.shape
    block = min(_BLOCK, max(16, 16 * (max(height, width) // 16)))
    profile.update(driver="GTiff", tiled=True, blockxsize=block, blockysize=block)
    with MemoryFile() as staged, MemoryFile() as final:
        with staged.open(**profile) as dst:
            dst.write(values, 1)
            factors = _overview_factors(height, width)
            if factors:
                dst.build_overviews(factors, Resampling.nearest)
        with staged.open() as src:
            rasterio.shutil.copy(src, final.name, driver="GTiff", tiled=True, blockxsize=block, blockysize=block,
                                 compress="deflate", copy_src_overviews=True)
        return final.read()


def orthorectify(values: np.ndarray, glt: np.ndarray, fill: float | int = np.nan) -> np.ndarray:
    """Swath-grid `values` (H, W) onto the lookup table's grid: cell (i, j) gets values[glt[i, j, 0],
    glt[i, j, 1]], `fill` where the table holds -1 (no swath pixel). Returns (H_ortho, W_ortho), values' dtype."""
    glt = np.asarray(glt)
    if glt.ndim != 3 or glt.shape[2] != 2:
        raise DataError(f"the geolocation lookup table must be (H, W, 2) (row, col), got shape {glt.shape}")
    rows, cols = glt[..., 0].astype(np.int64), glt[..., 1].astype(np.int64)
    filled = (rows >= 0) & (cols >= 0)
    height, width = values.shape
    if np.any(rows[filled] >= height) or np.any(cols[filled] >= width):
        raise DataError(f"the geolocation lookup table points outside the swath ({height} x {width}): its rows "
                        f"reach {int(rows.max())}, its columns {int(cols.max())}")
    out = np.full(glt.shape[:2], fill, dtype=values.dtype)
    out[filled] = values[rows[filled], cols[filled]]
    return out


def has_georeference(geo: GeoReference | None) -> bool:
    """True when a GeoTIFF can be placed: an affine transform, or a lookup table with its own transform."""
    return geo is not None and (geo.transform is not None or (geo.glt is not None and geo.glt_transform is not None))


def georeferenced_maps(fused: np.ndarray, geo: GeoReference | None, name: str) -> dict[str, bytes]:
    """{file name: GeoTIFF bytes} for the fused map (NaN = no data) of scene `name`: `anomaly_map.tif` on the
    scene's grid, or orthorectified through the lookup table with `anomaly_map_swath.tif` beside it; {} (and one
    log line) for a scene without a georeference."""
    if not has_georeference(geo):
        log.info(f"{name}: the scene carries no georeference (CRS and transform, or a lookup table): no {GEOTIFF} "
                 f"written")
        return {}
    if geo.glt is not None and geo.glt_transform is not None:
        ortho = orthorectify(np.asarray(fused, dtype=np.float32), geo.glt)
        if geo.glt_crs is None:
            log.warning(f"{name}: the lookup table's grid has a transform but no CRS: {GEOTIFF} is written without "
                        f"one (a GIS cannot place it)")
        return {GEOTIFF: geotiff_bytes(ortho, base_profile(geo.glt_crs, geo.glt_transform)),
                SWATH_GEOTIFF: geotiff_bytes(fused, {})}
    if geo.crs is None:
        log.warning(f"{name}: the scene has a transform but no CRS: {GEOTIFF} is written without one (a GIS cannot "
                    f"place it)")
    return {GEOTIFF: geotiff_bytes(fused, base_profile(geo.crs, geo.transform))}
