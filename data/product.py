"""What every sensor-product reader (data/envi.py, geotiff.py, emit.py, prisma.py) shares: importing an optional
dependency with a one-line install hint, the no-data rule, and the checks on the no-data mask.

    rasterio = require("rasterio", path, "GeoTIFF")     # DataError naming `pip install rasterio>=1.3` when missing
    valid = nodata_pixels(cube, fill)                   # (H, W) bool: False where every band holds `fill`
    check_valid(valid, (H, W), path)                    # DataError when no pixel, or <= 10% of them, hold data

The no-data rule (all readers): a pixel holds no data when EVERY band equals the product's fill value (ENVI `data
ignore value`, a GeoTIFF's nodata, EMIT's -9999); there the cube is NaN and `Scene.valid` False. A single band equal
to the fill value inside a valid pixel is an isolated dead value: it becomes NaN, which data.preprocess repairs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from utils.errors import DataError

MAX_NODATA_FRACTION = 0.9  # a scene with more no-data pixels than this is an error, not a map
INSTALL = {  # module -> the pip requirement that provides it (as requirements.txt pins it)
    "rasterio": "rasterio>=1.3",
    "xarray": "xarray>=2023.1",
    "h5netcdf": "h5netcdf>=1.1",
    "h5py": "h5py>=3.8",
    "spectral": "spectral>=0.23",
}
ROW_CHUNK_VALUES = 1 << 24  # values per chunk when a large cube is scanned or converted row by row


def require(module: str, path: Path, what: str) -> ModuleType:
    """`import module`, or a one-line DataError naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        requirement = INSTALL.get(module, module)
        raise DataError(f"{path}: reading {what} needs the Python package {module}: "
                        f"pip install '{requirement}'") from None


def equals_fill(values: np.ndarray, fill: float | None) -> np.ndarray:
    """Elementwise `values == fill` (NaN fill: isnan); all False when `fill` is None."""
    if fill is None:
        return np.zeros(values.shape, dtype=bool)
    if np.isnan(fill):
        return np.isnan(values)
    return values == np.asarray(fill, dtype=values.dtype) if values.dtype.kind == "f" else values == fill


def row_chunks(height: int, width: int, bands: int) -> list[slice]:
    """Row slices covering `height` rows of a (height, width, bands) cube, about ROW_CHUNK_VALUES values each."""
    rows = max(1, ROW_CHUNK_VALUES // max(1, width * bands))
    return [slice(start, min(start + rows, height)) for start in range(0, height, rows)]


def nodata_pixels(cube: np.ndarray, fill: float | None) -> np.ndarray | None:
    """(H, W) bool valid mask under the no-data rule (row chunks, works on a memmap); None when `fill` is None."""
    if fill is None:
        return None
    height, width, bands = cube.shape
    valid = np.empty((height, width), dtype=bool)
    for rows in row_chunks(height, width, bands):
        valid[rows] = ~equals_fill(np.asarray(cube[rows]), fill).all(axis=2)
    return valid


def mask_fill(cube: np.ndarray, fill: float | None, valid: np.ndarray | None) -> np.ndarray:
    """`cube` (float, in memory, changed in place) with NaN at no-data pixels and at isolated fill values."""
    if fill is not None:
        cube[equals_fill(cube, fill)] = np.nan
    if valid is not None:
        cube[~valid] = np.nan
    return cube


def drop_empty_bands(cube: np.ndarray, valid: np.ndarray | None, fill: float | None) -> np.ndarray:
    """Indices of the bands that hold the fill value at every valid pixel (EnMAP fills its bad bands so)."""
    if fill is None:
        return np.zeros(0, dtype=int)
    values = cube[valid] if valid is not None else cube.reshape(-1, cube.shape[2])
    if values.shape[0] == 0:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(equals_fill(values, fill).all(axis=0))


def bad_band_list(indices, wavelengths: np.ndarray | None) -> list[dict]:
    """Scene.bad_bands entries for the raw band `indices`: {"index": int, "wavelength": float nm or None}."""
    out = []
    for index in sorted(int(i) for i in indices):
        wavelength = None
        if wavelengths is not None and np.isfinite(wavelengths[index]) and wavelengths[index] > 0:
            wavelength = float(wavelengths[index])
        out.append({"index": index, "wavelength": wavelength})
    return out


def check_valid(valid: np.ndarray | None, shape: tuple[int, int], source: str | Path | None = None
                ) -> np.ndarray | None:
    """A scene's no-data mask checked against its (H, W) `shape`: None stays None, all-True becomes None; no valid
    pixel, or more than MAX_NODATA_FRACTION of the pixels without data, is a one-line DataError naming `source`."""
    if valid is None:
        return None
    valid = np.asarray(valid, dtype=bool)
    where = f"{source}: " if source else ""
    if valid.shape != tuple(shape):
        raise DataError(f"{where}a no-data mask of shape {valid.shape} for a scene of {shape[0]} x {shape[1]} pixels")
    total = valid.size
    good = int(valid.sum())
    if good == total:
        return None
    if good == 0:
        raise DataError(f"{where}every pixel is no-data (fill value); nothing to score")
    missing = 1.0 - good / total
    if missing > MAX_NODATA_FRACTION:
        raise DataError(f"{where}{missing:.1%} of the pixels are no-data ({good} of {total} hold data; more than "
                        f"{MAX_NODATA_FRACTION:.0%} no-data is refused); crop the scene to its valid part")
    return valid


def micrometres_to_nm(values: np.ndarray | None, units: str | None) -> np.ndarray | None:
    """Wavelengths or band widths in nm, given the product's `units` word (micrometres -> x 1000)."""
    if values is None or units is None:
        return values
    word = units.strip().lower()
    if word in ("micrometers", "micrometres", "micrometer", "micrometre", "microns", "micron", "um", "µm", "mu"):
        return values * 1000.0
    return values
