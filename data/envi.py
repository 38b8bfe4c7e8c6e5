"""ENVI images (`.hdr` + data file) through `spectral`, with what the header says about the product.

    scene = read_envi(Path("ang20190101t123456_rfl.hdr"))   # a Scene without gt

Header fields honoured:
- `wavelength`, `fwhm`, `wavelength units` (Micrometers, um, ... -> nm; nm or none: kept as given).
- `bbl`: 0 marks a bad band; it is dropped and listed in `Scene.bad_bands` (raw index, wavelength).
- `data ignore value`: a pixel whose every band equals it holds no data (`Scene.valid` False, NaN in the cube); a
  single band equal to it inside a valid pixel becomes NaN (data.preprocess repairs it).
- `reflectance scale factor`: the stored values are divided by it.
- `map info` (+ `coordinate system string` WKT): `Scene.geo` with the CRS and the affine transform from the tie
  point and pixel size. Without a WKT, a UTM / Geographic Lat/Lon map info on WGS-84 gives an EPSG code. A rotated
  map info keeps the CRS and drops the transform with a WARNING. No map info: geo None.

The cube stays a read-only memmap in the file's dtype (never read whole) when no band is dropped, no scale factor
is set and the data ignore value occurs nowhere; otherwise it is read into memory as float32, row chunk by row chunk.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from data.product import bad_band_list, equals_fill, micrometres_to_nm, nodata_pixels, require, row_chunks
from data.scene import GeoReference, Scene
from utils.errors import DataError
from utils.logging import get_logger


def read_envi(path: Path) -> Scene:
    """The scene of the ENVI header `path` (see the module doc); gt None."""
    image = open_envi(path)
    meta = image.metadata
    raw = envi_memmap(path, image)  # (rows, cols, bands)
    bands = raw.shape[2]
    units = meta.get("wavelength units")
    wavelengths = _floats(path, meta, "wavelength", bands)
    wavelengths = micrometres_to_nm(wavelengths, units)
    fwhm = micrometres_to_nm(_floats(path, meta, "fwhm", bands), units)
    bbl = _floats(path, meta, "bbl", bands)
    keep = np.flatnonzero(bbl != 0) if bbl is not None else np.arange(bands)
    if keep.size == 0:
        raise DataError(f"{path}: the header's bbl marks every band bad")
    bad = np.setdiff1d(np.arange(bands), keep)
    fill = _number(path, meta, "data ignore value")
    scale = _number(path, meta, "reflectance scale factor")
    if scale is not None and (scale == 0 or not math.isfinite(scale)):
        raise DataError(f"{path}: reflectance scale factor must be a finite non-zero number, got {scale}")
    valid = nodata_pixels(raw, fill)
    fill_occurs = fill is not None and (not valid.all() or _occurs(raw, fill))
    if bad.size == 0 and scale is None and not fill_occurs:
        cube = raw
    else:
        cube = _read_bands(raw, keep, scale, fill, valid)
    if bad.size:
        get_logger().info(f"{path.name}: dropped {bad.size} band(s) the header's bbl marks bad")
    return Scene(name=path.stem, cube=cube,
                 wavelengths=None if wavelengths is None else wavelengths[keep],
                 fwhm=None if fwhm is None else fwhm[keep],
                 valid=valid, bad_bands=bad_band_list(bad, wavelengths), geo=envi_geo(path, meta))


def open_envi(path: Path) -> Any:
    """spectral's image of the header `path`; a missing data file or unreadable header is a DataError."""
    envi = require("spectral", path, "ENVI").io.envi
    try:
        image = envi.open(str(path))
    except envi.EnviDataFileNotFoundError:
        stem = path.with_suffix("").name
        raise DataError(f"{path}: the ENVI data file is missing: no {stem}, {stem}.img, {stem}.dat (or another "
                        f"known extension) next to the header") from None
    except (envi.EnviException, OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable ENVI header ({type(err).__name__}: {err})") from None
    if not hasattr(image, "open_memmap"):
        raise DataError(f"{path}: an ENVI spectral library, not an image")
    return image


def envi_memmap(path: Path, image: Any) -> np.ndarray:
    """The (rows, cols, bands) read-only memmap of `image`'s data file."""
    try:
        return image.open_memmap(interleave="bip")  # (rows, cols, bands), a view on the data file
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot map the ENVI data file ({type(err).__name__}: {err})") from None


def envi_geo(path: Path, meta: dict) -> GeoReference | None:
    """GeoReference from `map info` and `coordinate system string`, or None without a map info."""
    info = meta.get("map info")
    if not info or isinstance(info, str):
        return None
    fields = [str(v).strip() for v in info]
    try:
        ref_x, ref_y, east, north, size_x, size_y = (float(v) for v in fields[1:7])
    except (ValueError, IndexError):
        raise DataError(f"{path}: map info must start with a projection name, the tie point (pixel x, y, "
                        f"easting, northing) and the pixel size (x, y), got {{{', '.join(fields)}}}") from None
    crs = _crs(meta, fields)
    options = {k.strip().lower(): v.strip() for k, _, v in (f.partition("=") for f in fields if "=" in f)}
    rotation = float(options.get("rotation", 0) or 0)
    if rotation != 0:
        get_logger().warning(f"{path.name}: map info is rotated by {rotation} degrees; the scene keeps its CRS but "
                             f"no transform")
        return GeoReference(crs=crs, transform=None)
    # ENVI's tie pixel is 1-based: (1, 1) is the upper-left corner of the first pixel
    transform = (size_x, 0.0, east - (ref_x - 1.0) * size_x, 0.0, -size_y, north + (ref_y - 1.0) * size_y)
    return GeoReference(crs=crs, transform=transform)


def _crs(meta: dict, fields: list[str]) -> str | None:
    wkt = meta.get("coordinate system string")
    if wkt:
        return ", ".join(wkt) if isinstance(wkt, list) else str(wkt)  # spectral splits a braced value at commas
    name = fields[0].lower()
    datum = " ".join(fields).lower()
    if "wgs-84" not in datum and "wgs84" not in datum:
        return None
    if name.startswith("geographic"):
        return "EPSG:4326"
    if name == "utm" and len(fields) > 8:
        try:
            zone = int(fields[7])
        except ValueError:
            return None
        return f"EPSG:{32600 + zone if fields[8].lower().startswith('n') else 32700 + zone}"
    return None


def _floats(path: Path, meta: dict, key: str, bands: int) -> np.ndarray | None:
    values = meta.get(key)
    if values is None:
        return None
    values = values if isinstance(values, list) else [values]
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: the header's {key} must be numbers") from None
    if array.size != bands:
        raise DataError(f"{path}: the header's {key} has {array.size} values for {bands} bands")
    return array


def _number(path: Path, meta: dict, key: str) -> float | None:
    value = meta.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, list) else value)
    except ValueError:
        raise DataError(f"{path}: the header's {key} must be a number, got {value!r}") from None


def _occurs(raw: np.ndarray, fill: float) -> bool:
    height, width, bands = raw.shape
    return any(equals_fill(np.asarray(raw[rows]), fill).any() for rows in row_chunks(height, width, bands))


def _read_bands(raw: np.ndarray, keep: np.ndarray, scale: float | None, fill: float | None,
                valid: np.ndarray | None) -> np.ndarray:
    """The kept bands in memory as float32, fill values NaN, divided by `scale`."""
    height, width, bands = raw.shape
    cube = np.empty((height, width, keep.size), dtype=np.float32)
    for rows in row_chunks(height, width, bands):
        stored = np.asarray(raw[rows])[:, :, keep]
        chunk = stored.astype(np.float32)
        chunk[equals_fill(stored, fill)] = np.nan  # compared in the stored dtype, before any conversion
        if valid is not None:
            chunk[~valid[rows]] = np.nan
        if scale is not None:
            chunk /= np.float32(scale)
        cube[rows] = chunk
    return cube
