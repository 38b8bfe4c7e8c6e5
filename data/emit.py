"""EMIT L1B radiance / L2A reflectance NetCDF (xarray + h5netcdf), in the swath geometry as delivered.

    scene = read_emit(Path("EMIT_L2A_RFL_001_20230101T000000_2300100_001.nc"))   # a Scene without gt

Layout read (NASA's EMIT products, as EMIT-Data-Resources' emit_tools opens them):
- root variable `reflectance` (L2A) or `radiance` (L1B), dims (downtrack, crosstrack, bands); fill -9999 (or the
  variable's _FillValue);
- group `sensor_band_parameters`: `wavelengths` (nm), `fwhm`, `good_wavelengths` (0 = bad: dropped and listed);
- group `location`: `lat`, `lon` (downtrack, crosstrack), `glt_x`, `glt_y` (the orthorectified grid's 1-based
  crosstrack / downtrack index of the swath pixel that fills each cell, 0 = none);
- root attributes `geotransform` (GDAL order: x0, dx, rx, y0, ry, dy) and `spatial_ref` (WKT), both of the GLT grid.

`Scene.geo`: crs and transform None (a swath), `glt` (H_ortho, W_ortho, 2) int32 (row, col) = (glt_y - 1, glt_x - 1)
with -1 where none, `glt_crs` / `glt_transform` (rasterio order), `lon` / `lat`. Pixels whose every band holds the
fill value: `valid` False (NaN in the cube).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.product import bad_band_list, nodata_pixels, require
from data.scene import GeoReference, Scene
from utils.errors import DataError
from utils.logging import get_logger

FILL = -9999.0
CUBE_NAMES = ("reflectance", "radiance")


def read_emit(path: Path) -> Scene:
    """The scene of the EMIT NetCDF `path` (see the module doc); gt None."""
    xr = require("xarray", path, "EMIT NetCDF")
    require("h5netcdf", path, "EMIT NetCDF")
    try:
        with xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False) as root:
            name = next((n for n in CUBE_NAMES if n in root.variables), None)
            if name is None:
                found = ", ".join(sorted(map(str, root.variables))) or "none"
                raise DataError(f"{path}: no root variable 'reflectance' or 'radiance' (an EMIT L2A / L1B product); "
                                f"variables found: {found}")
            variable = root[name]
            if variable.ndim != 3:
                raise DataError(f"{path}: '{name}' must be (downtrack, crosstrack, bands), got dims {variable.dims}")
            fill = float(variable.attrs.get("_FillValue", FILL))
            attrs = dict(root.attrs)
            bands = _group(xr, path, "sensor_band_parameters")
            location = _group(xr, path, "location")
            count = variable.shape[2]
            wavelengths = _band_array(path, bands, "wavelengths", count, required=True)
            fwhm = _band_array(path, bands, "fwhm", count)
            good = _band_array(path, bands, "good_wavelengths", count)
            keep = np.flatnonzero(good != 0) if good is not None else np.arange(count)
            if keep.size < 2:
                raise DataError(f"{path}: good_wavelengths keeps {keep.size} band(s); anomaly detection needs spectra")
            stored = np.asarray(variable.values if keep.size == count else variable.isel({variable.dims[2]: keep}).values)
            geo = _geo(path, location, attrs, variable.shape[:2])
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise DataError(f"{path}: not a readable EMIT NetCDF ({type(err).__name__}: {err})") from None
    valid = nodata_pixels(stored, fill)
    cube = stored.astype(np.float32)  # a copy: the fills become NaN
    cube[stored == fill] = np.nan
    if valid is not None:
        cube[~valid] = np.nan
    bad = np.setdiff1d(np.arange(count), keep)
    if bad.size:
        get_logger().info(f"{path.name}: dropped {bad.size} band(s) that good_wavelengths marks bad")
    return Scene(name=path.stem, cube=cube, wavelengths=wavelengths[keep],
                 fwhm=None if fwhm is None else fwhm[keep], valid=valid,
                 bad_bands=bad_band_list(bad, wavelengths), geo=geo)


def _group(xr, path: Path, group: str):
    try:
        with xr.open_dataset(path, engine="h5netcdf", group=group, mask_and_scale=False) as dataset:
            return {str(k): np.asarray(v.values) for k, v in dataset.variables.items()}
    except OSError as err:
        if "group" in str(err).lower() or "not found" in str(err).lower():
            raise DataError(f"{path}: no group '{group}' (an EMIT product has sensor_band_parameters and "
                            f"location)") from None
        raise


def _band_array(path: Path, bands: dict, name: str, count: int, required: bool = False) -> np.ndarray | None:
    if name not in bands:
        if required:
            raise DataError(f"{path}: sensor_band_parameters has no '{name}'")
        return None
    values = np.asarray(bands[name], dtype=np.float64).reshape(-1)
    if values.size != count:
        raise DataError(f"{path}: sensor_band_parameters/{name} has {values.size} values for {count} bands")
    return values


def _geo(path: Path, location: dict, attrs: dict, swath: tuple[int, int]) -> GeoReference:
    lat, lon = location.get("lat"), location.get("lon")
    for name, grid in (("lat", lat), ("lon", lon)):
        if grid is not None and grid.shape != swath:
            raise DataError(f"{path}: location/{name} has shape {grid.shape}, the swath is {swath}")
    glt = None
    if "glt_x" in location and "glt_y" in location:
        glt_x = np.nan_to_num(np.asarray(location["glt_x"], dtype=np.float64)).astype(np.int64)
        glt_y = np.nan_to_num(np.asarray(location["glt_y"], dtype=np.float64)).astype(np.int64)
        if glt_x.shape != glt_y.shape or glt_x.ndim != 2:
            raise DataError(f"{path}: location/glt_x {glt_x.shape} and glt_y {glt_y.shape} must be one 2-D grid")
        none = (glt_x <= 0) | (glt_y <= 0)
        if ((glt_y > swath[0]) | (glt_x > swath[1])).any():
            raise DataError(f"{path}: location/glt_x / glt_y point outside the swath {swath}")
        glt = np.stack([np.where(none, -1, glt_y - 1), np.where(none, -1, glt_x - 1)], axis=-1).astype(np.int32)
    transform = None
    if "geotransform" in attrs:
        gt = np.asarray(attrs["geotransform"], dtype=np.float64).reshape(-1)
        if gt.size != 6:
            raise DataError(f"{path}: the geotransform attribute must hold 6 numbers, got {gt.size}")
        transform = (gt[1], gt[2], gt[0], gt[4], gt[5], gt[3])  # GDAL (c, a, b, f, d, e) -> rasterio (a..f)
        transform = tuple(float(v) for v in transform)
    crs = attrs.get("spatial_ref")
    crs = crs.decode() if isinstance(crs, bytes) else (str(crs) if crs is not None else None)
    return GeoReference(crs=None, transform=None, glt=glt, glt_crs=crs, glt_transform=transform,
                        lon=None if lon is None else lon.astype(np.float64),
                        lat=None if lat is None else lat.astype(np.float64))
