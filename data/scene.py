"""`Scene`: one hyperspectral scene in memory (what data.io.load_scene and data.synthetic return), with what a
sensor product says about it: which pixels hold no data, which bands were dropped as bad, where it lies on Earth.

    scene = Scene(name="urban", cube=cube, gt=gt, wavelengths=wavelengths)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GeoReference:
    """Where a scene's pixels lie. `crs`: the coordinate reference system as WKT (or an EPSG string such as
    "EPSG:32611"); `transform`: the affine pixel -> CRS map as rasterio's (a, b, c, d, e, f); both None for a swath
    product that is located by a lookup table instead: `glt` (H_ortho, W_ortho, 2) int32 (row, col) of the swath
    pixel that fills each cell of an orthorectified grid (-1 = none; EMIT's glt_y - 1, glt_x - 1), whose own CRS and
    transform are `glt_crs` / `glt_transform`. `lon` / `lat`: (H, W) per swath pixel, when the product has them."""

    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None
    glt: np.ndarray | None = None
    glt_crs: str | None = None
    glt_transform: tuple[float, float, float, float, float, float] | None = None
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None


@dataclass
class Scene:
    """One scene.

    cube: (H, W, B) float32 ndarray, or for `.npy` / ENVI files a read-only memmap in the file's dtype; bands a
    product marks bad are already dropped.
    gt: (H, W) uint8 with values 0/1 (1 = anomaly), or None.
    wavelengths: (B,) float32 band centres (nm in the shared data), or None; fwhm: (B,) band widths, or None.
    valid: (H, W) bool, False where the product marks no data (fill value, data ignore value, nodata), or None when
    every pixel holds data.
    bad_bands: the product's bands dropped before `cube`, as {"index": raw band index, "wavelength": nm or None}.
    geo: where the pixels lie (GeoReference), or None.
    """

    name: str
    cube: np.ndarray
    gt: np.ndarray | None = None
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    valid: np.ndarray | None = None
    bad_bands: list[dict] = field(default_factory=list)
    geo: GeoReference | None = None


def synthetic_name(seed: int) -> str:
    """The name of the embedded synthetic scene of `seed` ('synthetic' for seed 0)."""
    return "synthetic" if seed == 0 else f"synthetic-{seed}"
