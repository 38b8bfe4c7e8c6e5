"""GeoTIFF / COG cubes through rasterio: every raster band is a spectral band.

    scene = read_geotiff(Path("ENMAP01-____L2A-DT0000001867_..._SPECTRAL_IMAGE.TIF"))   # a Scene without gt

Band centres (nm), first found of:
1. a METADATA.XML beside the file (EnMAP: `specific/bandCharacterisation/bandID[@number]` with
   `wavelengthCenterOfBand`, `FWHMOfBand`, `GainOfBand`, `OffsetOfBand`; DESIS: `band` elements with `bandNumber`,
   `wavelengthCenterOfBand`, `wavelengthWidthOfBand`, `gainOfBand`, `offsetOfBand`). Its gains and offsets scale the
   stored values (value = DN * gain + offset);
2. per-band tags `wavelength` (+ `fwhm`, `wavelength_units`), or GDAL's IMAGERY domain `CENTRAL_WAVELENGTH_UM` /
   `FWHM_UM`;
3. a dataset-level `wavelength` list `{v1, v2, ...}` (GDAL's ENVI-style metadata, default or ENVI domain), with
   `fwhm`, `wavelength_units`;
4. band descriptions that each hold one number (`"Band 3 (450.5 nm)"` style, the last number read).
Without any, a one-line WARNING: the bands are resampled over band index. Micrometre values (units say so, or all
below 30) become nm.

No-data: the dataset's nodata value under the no-data rule (data/product.py); bands that hold it at every valid
pixel (EnMAP fills its bad bands so) are dropped and listed. `Scene.geo`: the CRS as WKT and the affine transform;
a file without a CRS keeps its transform with a WARNING.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from data.product import bad_band_list, drop_empty_bands, equals_fill, micrometres_to_nm, nodata_pixels, require
from data.scene import GeoReference, Scene
from utils.errors import DataError
from utils.logging import get_logger

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def read_geotiff(path: Path) -> Scene:
    """The scene of the GeoTIFF `path` (see the module doc); gt None."""
    rasterio = require("rasterio", path, "GeoTIFF")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                stored = dataset.read()  # (bands, rows, cols)
                fill = dataset.nodata
                crs = dataset.crs.to_wkt() if dataset.crs else None
                transform = tuple(float(v) for v in tuple(dataset.transform)[:6])
                bands = _band_metadata(path, dataset)
    except rasterio.errors.RasterioError as err:
        raise DataError(f"{path}: not a readable GeoTIFF ({type(err).__name__}: {err})") from None
    count = stored.shape[0]
    wavelengths, fwhm, gains, offsets = bands if bands else (None, None, None, None)
    if wavelengths is not None and wavelengths.size != count:
        raise DataError(f"{path}: {wavelengths.size} wavelengths in its metadata for {count} bands")
    if wavelengths is None:
        get_logger().warning(f"{path.name}: no band wavelengths in the file or a METADATA.XML beside it; the "
                             f"bands are resampled over band index")
    raw = np.moveaxis(stored, 0, -1)  # (rows, cols, bands) view
    valid = nodata_pixels(raw, fill)
    empty = drop_empty_bands(raw, valid, fill)
    keep = np.setdiff1d(np.arange(count), empty)
    if keep.size == 0:
        raise DataError(f"{path}: every band holds only the nodata value")
    if empty.size:
        get_logger().info(f"{path.name}: dropped {empty.size} band(s) that hold the nodata value at every pixel")
    cube = _to_float(raw, keep, fill, valid, gains, offsets)
    if crs is None:
        get_logger().warning(f"{path.name}: the GeoTIFF has no CRS; maps of it keep its transform but no CRS")
    return Scene(name=path.stem, cube=cube,
                 wavelengths=None if wavelengths is None else wavelengths[keep],
                 fwhm=None if fwhm is None else fwhm[keep],
                 valid=valid, bad_bands=bad_band_list(empty, wavelengths),
                 geo=GeoReference(crs=crs, transform=transform))


def _to_float(raw: np.ndarray, keep: np.ndarray, fill: float | None, valid: np.ndarray | None,
              gains: np.ndarray | None, offsets: np.ndarray | None) -> np.ndarray:
    """(rows, cols, kept bands) float32, C-contiguous, NaN at fill values and no-data pixels, gain/offset applied."""
    whole = keep.size == raw.shape[2]
    picked = raw if whole else raw[:, :, keep]
    if fill is None and raw.dtype == np.float32 and gains is None:
        return np.ascontiguousarray(picked)
    cube = np.ascontiguousarray(picked, dtype=np.float32)
    if fill is not None:
        cube[equals_fill(picked, fill)] = np.nan  # compared in the stored dtype
        if valid is not None:
            cube[~valid] = np.nan
    if gains is not None:
        cube *= gains[keep].astype(np.float32)
        cube += offsets[keep].astype(np.float32)
    return cube


# ----------------------------------------------------------------------------------------------
# Band centres, widths and scaling

def _band_metadata(path: Path, dataset) -> tuple | None:
    """(wavelengths nm, fwhm nm | None, gains | None, offsets | None) or None."""
    xml = metadata_xml(path)
    if xml is not None:
        found = read_band_xml(xml, dataset.count)
        if found is not None:
            get_logger().info(f"{path.name}: band wavelengths from {xml.name}")
            return found
    for source in (_band_tags, _dataset_tags, _descriptions):
        found = source(dataset)
        if found is not None:
            wavelengths, fwhm, units = found
            if not units and np.nanmax(wavelengths) < 30:  # no units said: band centres below 30 are micrometres
                units = "micrometers"
            return micrometres_to_nm(wavelengths, units), micrometres_to_nm(fwhm, units), None, None
    return None


def _lower(tags: dict) -> dict:
    return {str(k).lower(): v for k, v in tags.items()}


def _band_tags(dataset) -> tuple | None:
    centres, widths, units = [], [], None
    for band in range(1, dataset.count + 1):
        tags = _lower(dataset.tags(band))
        imagery = _lower(dataset.tags(band, ns="IMAGERY"))
        if "wavelength" in tags:
            centres.append(_float(tags["wavelength"]))
            widths.append(_float(tags.get("fwhm")))
            units = tags.get("wavelength_units", units)
        elif "central_wavelength_um" in imagery:
            centres.append(_float(imagery["central_wavelength_um"]))
            widths.append(_float(imagery.get("fwhm_um")))
            units = "micrometers"
        else:
            return None
    return _arrays(centres, widths, units)


def _dataset_tags(dataset) -> tuple | None:
    for namespace in (None, "ENVI"):
        tags = _lower(dataset.tags(ns=namespace) if namespace else dataset.tags())
        if "wavelength" in tags:
            centres = _list(tags["wavelength"])
            widths = _list(tags["fwhm"]) if "fwhm" in tags else None
            return _arrays(centres, widths, tags.get("wavelength_units") or tags.get("wavelength units"))
    return None


def _descriptions(dataset) -> tuple | None:
    texts = dataset.descriptions
    if not texts or any(not t for t in texts):
        return None
    centres = []
    for text in texts:
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        centres.append(float(numbers[-1]))
    units = "micrometers" if all(("um" in t.lower() or "micro" in t.lower()) for t in texts) else None
    return _arrays(centres, None, units)


def _arrays(centres: list, widths: list | None, units: str | None) -> tuple | None:
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size == 0 or not np.isfinite(centres).all():
        return None
    fwhm = None
    if widths is not None and len(widths) == centres.size and all(w is not None for w in widths):
        fwhm = np.asarray(widths, dtype=np.float64)
    return centres, fwhm, units


def _float(value) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return float("nan")


def _list(text: str) -> list[float]:
    return [float(v) for v in _NUMBER.findall(str(text))]


# ----------------------------------------------------------------------------------------------
# EnMAP / DESIS METADATA.XML

def metadata_xml(path: Path) -> Path | None:
    """The product's METADATA.XML beside `path`: the one sharing the image's name before `SPECTRAL_IMAGE`, else
    the only `*METADATA*.XML` in the folder."""
    candidates = sorted(p for p in path.parent.iterdir()
                        if p.is_file() and p.suffix.lower() == ".xml" and "metadata" in p.name.lower())
    if not candidates:
        return None
    prefix = re.split(r"spectral_image", path.stem, flags=re.IGNORECASE)[0].rstrip("-_").lower()
    if prefix and prefix != path.stem.lower():
        shared = [p for p in candidates if p.name.lower().startswith(prefix)]
        if len(shared) == 1:
            return shared[0]
    return candidates[0] if len(candidates) == 1 else None


def read_band_xml(xml: Path, count: int) -> tuple | None:
    """(wavelengths, fwhm, gains, offsets) of `count` bands from an EnMAP or DESIS metadata XML, or None when it
    has no band table of `count` bands. Gains / offsets None when the XML has none."""
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"{xml}: not a readable metadata XML ({type(err).__name__}: {err})") from None
    rows = {}
    for element in root.iter():
        name = _local(element.tag)
        if name == "bandID" and element.get("number"):
            number = element.get("number")
        elif name == "band" and _child(element, "bandNumber") is not None:
            number = _child(element, "bandNumber")
        else:
            continue
        centre = _child(element, "wavelengthCenterOfBand")
        if centre is None:
            continue  # bandID elements elsewhere (quality tables) carry no band centre
        rows[int(float(number))] = (
            float(centre),
            _maybe(_child(element, "FWHMOfBand") or _child(element, "wavelengthWidthOfBand")),
            _maybe(_child(element, "GainOfBand") or _child(element, "gainOfBand")),
            _maybe(_child(element, "OffsetOfBand") or _child(element, "offsetOfBand")),
        )
    if len(rows) != count:
        if rows:
            get_logger().warning(f"{xml.name}: describes {len(rows)} bands, the image has {count}; not used")
        return None
    table = [rows[k] for k in sorted(rows)]
    columns = [np.asarray([r[i] if r[i] is not None else np.nan for r in table], dtype=np.float64)
               for i in range(4)]
    wavelengths, fwhm, gains, offsets = columns
    fwhm = fwhm if np.isfinite(fwhm).all() else None
    if not np.isfinite(gains).all():
        gains, offsets = None, None
    else:
        offsets = np.where(np.isfinite(offsets), offsets, 0.0)
    return wavelengths, fwhm, gains, offsets


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name and child.text and child.text.strip():
            return child.text.strip()
    return None


def _maybe(text: str | None) -> float | None:
    return None if text is None else float(text)
