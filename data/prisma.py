"""PRISMA L1 / L2 HDF-EOS5 (`.he5`) through h5py: the VNIR and SWIR cubes merged into one scene.

    scene = read_prisma(Path("PRS_L2D_STD_20200209102459_20200209102503_0001.he5"))   # a Scene without gt

Layout read (ASI's PRISMA product specification, as HyperCoast's read_prisma and hytools read it):
- the swath `HDFEOS/SWATHS/PRS_<level>_HCO` (else the one swath holding both cubes): `Data Fields/VNIR_Cube` and
  `Data Fields/SWIR_Cube`, stored (rows, bands, cols);
- root attributes `List_Cw_Vnir` / `List_Cw_Swir` (band centres, nm; 0 = no band), `List_Fwhm_Vnir` /
  `List_Fwhm_Swir`, `List_Cw_Vnir_Flags` / `List_Cw_Swir_Flags` (0 = band not valid);
- scaling: L2 `L2ScaleVnirMin` / `L2ScaleVnirMax` (and Swir): value = min + DN * (max - min) / 65535;
  L1 `ScaleFactor_Vnir` / `Offset_Vnir` (and Swir): radiance = DN / ScaleFactor - Offset;
- `Geolocation Fields/Latitude` and `Longitude` (L2) or `Latitude_VNIR` / `Longitude_VNIR` (L1), (rows, cols);
- L2D (geocoded): `Epsg_Code` and `Product_ULcorner_easting/northing`, `Product_LRcorner_easting/northing` give
  the CRS and transform (pixel size = corner span / pixel count, as HyperCoast).

The bands of both cubes are sorted by wavelength. Dropped and listed in `Scene.bad_bands` (index: VNIR bands
0 .. nV-1, then SWIR nV ..): zero wavelengths, flag 0, and of two bands of equal wavelength the VNIR one (the
preprocessing needs distinct wavelengths). A pixel whose DN is 0 in every kept band of both cubes is no-data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.product import bad_band_list, require
from data.scene import GeoReference, Scene
from utils.errors import DataError
from utils.logging import get_logger

DN_MAX = 65535.0


def read_prisma(path: Path) -> Scene:
    """The scene of the PRISMA `.he5` file `path` (see the module doc); gt None."""
    h5py = require("h5py", path, "PRISMA")
    try:
        with h5py.File(path, "r") as file:
            swath_name, swath = _swath(path, file)
            attrs = dict(file.attrs)
            level2 = "_L2" in swath_name
            parts = []
            for part in ("Vnir", "Swir"):
                parts.append(_read_part(path, swath, attrs, part, level2))
            fields = swath.get("Geolocation Fields")
            lat = _geolocation(fields, ("Latitude", "Latitude_VNIR"))
            lon = _geolocation(fields, ("Longitude", "Longitude_VNIR"))
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: not a readable PRISMA .he5 file ({type(err).__name__}: {err})") from None
    (vnir, wl_v, fwhm_v, flags_v), (swir, wl_s, fwhm_s, flags_s) = parts
    if vnir[0].shape[:2] != swir[0].shape[:2]:
        raise DataError(f"{path}: the VNIR cube {vnir[0].shape[:2]} and SWIR cube {swir[0].shape[:2]} differ in size")
    wavelengths = np.concatenate([wl_v, wl_s])
    fwhm = np.concatenate([fwhm_v, fwhm_s]) if fwhm_v is not None and fwhm_s is not None else None
    usable = (wavelengths > 0) & np.isfinite(wavelengths) & (np.concatenate([flags_v, flags_s]) != 0)
    is_vnir = np.arange(wavelengths.size) < wl_v.size
    for index in np.flatnonzero(usable & is_vnir):  # equal wavelengths: keep the SWIR band
        if np.any(usable & ~is_vnir & (wavelengths == wavelengths[index])):
            usable[index] = False
    keep = np.flatnonzero(usable)
    keep = keep[np.argsort(wavelengths[keep], kind="stable")]
    if keep.size < 2:
        raise DataError(f"{path}: {keep.size} usable band(s) after dropping zero-wavelength and flagged bands")
    bad = np.setdiff1d(np.arange(wavelengths.size), keep)
    if bad.size:
        get_logger().info(f"{path.name}: dropped {bad.size} band(s): zero wavelength, flagged, or a VNIR band of the "
                          f"same wavelength as a SWIR band")
    nv = wl_v.size
    stored = [vnir, swir]
    shape = vnir[0].shape[:2]
    cube = np.empty(shape + (keep.size,), dtype=np.float32)
    zero = np.ones(shape, dtype=bool)
    for out, index in enumerate(keep):
        source, band = (0, index) if index < nv else (1, index - nv)
        dn, scale = stored[source][0][:, :, band], stored[source][1]
        zero &= dn == 0
        cube[:, :, out] = scale(dn)
    valid = None
    if zero.any():
        valid = ~zero
        cube[zero] = np.nan
    return Scene(name=path.stem, cube=cube, wavelengths=wavelengths[keep],
                 fwhm=None if fwhm is None else fwhm[keep], valid=valid,
                 bad_bands=bad_band_list(bad, wavelengths),
                 geo=_geo(path, swath_name, attrs, cube.shape[:2], lat, lon))


def _swath(path: Path, file) -> tuple[str, object]:
    swaths = file.get("HDFEOS/SWATHS")
    if swaths is None:
        raise DataError(f"{path}: no HDFEOS/SWATHS group; not a PRISMA product")
    names = sorted(swaths.keys())
    with_cubes = [n for n in names if "Data Fields" in swaths[n] and "VNIR_Cube" in swaths[n]["Data Fields"]]
    hco = [n for n in with_cubes if n.endswith("_HCO")]
    chosen = (hco or with_cubes or [None])[0]
    if chosen is None:
        raise DataError(f"{path}: no swath with Data Fields/VNIR_Cube (swaths: {', '.join(names) or 'none'})")
    return chosen, swaths[chosen]


def _attr(path: Path, attrs: dict, name: str) -> np.ndarray:
    if name not in attrs:
        raise DataError(f"{path}: the root attribute {name} is missing")
    return np.asarray(attrs[name], dtype=np.float64).reshape(-1)


def _read_part(path: Path, swath, attrs: dict, part: str, level2: bool) -> tuple:
    """((cube (rows, cols, bands) of DN, scale DN -> float32), wavelengths, fwhm | None, flags)."""
    key = f"{part.upper()}_Cube"
    fields = swath["Data Fields"]
    if key not in fields:
        raise DataError(f"{path}: the {part.upper()} cube (Data Fields/{key}) is missing; PRISMA scenes are read as "
                        f"VNIR and SWIR together")
    stored = fields[key]
    if stored.ndim != 3:
        raise DataError(f"{path}: {key} must be (rows, bands, cols), got shape {stored.shape}")
    dn = np.transpose(stored[()], (0, 2, 1))  # (rows, cols, bands) view of the (rows, bands, cols) array
    bands = dn.shape[2]
    wavelengths = _attr(path, attrs, f"List_Cw_{part}")
    if wavelengths.size != bands:
        raise DataError(f"{path}: List_Cw_{part} has {wavelengths.size} values for the {bands} bands of {key}")
    fwhm = _attr(path, attrs, f"List_Fwhm_{part}") if f"List_Fwhm_{part}" in attrs else None
    if fwhm is not None and fwhm.size != bands:
        fwhm = None
    flags = _attr(path, attrs, f"List_Cw_{part}_Flags") if f"List_Cw_{part}_Flags" in attrs else np.ones(bands)
    if flags.size != bands:
        raise DataError(f"{path}: List_Cw_{part}_Flags has {flags.size} values for {bands} bands")
    if level2:
        low = np.float32(_attr(path, attrs, f"L2Scale{part}Min")[0])
        high = np.float32(_attr(path, attrs, f"L2Scale{part}Max")[0])
        step = np.float32((float(high) - float(low)) / DN_MAX)
        scale = lambda values: low + values.astype(np.float32) * step  # noqa: E731
    else:
        factor = np.float32(_attr(path, attrs, f"ScaleFactor_{part}")[0])
        offset = np.float32(_attr(path, attrs, f"Offset_{part}")[0]) if f"Offset_{part}" in attrs else np.float32(0)
        if factor == 0:
            raise DataError(f"{path}: ScaleFactor_{part} is 0")
        scale = lambda values: values.astype(np.float32) / factor - offset  # noqa: E731
    return (dn, scale), wavelengths, fwhm, flags


def _geolocation(fields, names: tuple[str, ...]) -> np.ndarray | None:
    if fields is None:
        return None
    for name in names:
        if name in fields:
            return np.asarray(fields[name][()], dtype=np.float64)
    return None


def _geo(path: Path, swath_name: str, attrs: dict, shape: tuple[int, int], lat, lon) -> GeoReference | None:
    for name, grid in (("latitude", lat), ("longitude", lon)):
        if grid is not None and grid.shape != shape:
            get_logger().warning(f"{path.name}: the {name} grid {grid.shape} does not match the cube {shape}; "
                                 f"not kept")
            lat = lon = None
    crs = transform = None
    corners = ("Product_ULcorner_easting", "Product_ULcorner_northing",
               "Product_LRcorner_easting", "Product_LRcorner_northing")
    if "L2D" in swath_name and "Epsg_Code" in attrs and all(c in attrs for c in corners):
        crs = f"EPSG:{int(_attr(path, attrs, 'Epsg_Code')[0])}"
        ul_e, ul_n, lr_e, lr_n = (float(_attr(path, attrs, c)[0]) for c in corners)
        rows, cols = shape
        transform = ((lr_e - ul_e) / cols, 0.0, ul_e, 0.0, (lr_n - ul_n) / rows, ul_n)
    if crs is None and lat is None:
        return None
    return GeoReference(crs=crs, transform=transform, lon=lon, lat=lat)
