"""Read one hyperspectral scene from disk into a `Scene`.

    scene = load_scene("../shared/data/had/abu-airport-1.npz")   # cube (H, W, B), gt (H, W)
    scene = load_scene("big.npy")                                 # cube stays a read-only memmap
    scene = load_scene("urban.mat", cube_key="data", gt_key="map")
    scene = load_scene("scene.hdr")                               # ENVI header + its data file
    scene = load_scene("synthetic:3")                             # the embedded scene, seed 3

Formats (chosen by the file extension):
- `.npz`: `cube`, optional `gt`, optional `wavelengths` (other names via `cube_key` / `gt_key`).
- `.npy`: the cube only, opened with `mmap_mode='r'` and never read whole.
- `.mat`: MATLAB v5 (scipy) or v7.3 (HDF5, read with h5py and transposed back from MATLAB's
  column-major order).
- `.hdr`: ENVI header and its data file, via `spectral.envi.open`; wavelengths from the header.

Which array is the cube / gt when no key is given: `cube` if present, else the largest 3-D numeric
array; `gt` (or `gt_mask`, `map`, `groundtruth`, `ground_truth`) if present, else the one 2-D
(H, W) array holding only 0/1 with fewer than half of its pixels set (two such arrays: an error
asking for `gt_key`). Keys picked this way are logged.

Layout: the cube is `(H, W, B)`. It is read as `(B, H, W)` (and transposed) only on explicit
evidence from the same file: wavelengths whose length matches axis 0 but not axis 2, or a gt whose
shape is `cube.shape[1:]` but not `cube.shape[:2]`. Without such evidence no layout is guessed: the
cube is read as (H, W, B) and the log says so; wavelengths that match neither axis are an error.

Checks: 3-D cube with H, W >= 1 and B >= 2 (one band carries no spectrum); integer cubes become
float32 (a `.npy` or ENVI memmap keeps its stored dtype: every consumer converts chunk by chunk); gt of
shape (H, W) with values in {0, 1} (bool ok), stored as uint8; a gt without any anomaly loads (the
metrics report AUC as undefined). Non-finite cube values load: `data.preprocess` repairs them.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from utils.errors import DataError
from utils.logging import get_logger

GT_NAMES = ("gt", "gt_mask", "map", "groundtruth", "ground_truth")
WAVELENGTH_NAMES = ("wavelengths", "wavelength")


@dataclass
class Scene:
    """One scene.

    cube: (H, W, B) float32 ndarray, or for `.npy` / ENVI files a read-only memmap in the file's dtype.
    gt: (H, W) uint8 with values 0/1 (1 = anomaly), or None.
    wavelengths: (B,) float32 band centres (nm in the shared data), or None.
    """

    name: str
    cube: np.ndarray
    gt: np.ndarray | None = None
    wavelengths: np.ndarray | None = None


def load_scene(path: str | Path, cube_key: str | None = None, gt_key: str | None = None) -> Scene:
    """Load a scene file (or the pseudo-path `synthetic` / `synthetic:SEED`); see the module doc."""
    text = str(path)
    if text == "synthetic" or text.startswith("synthetic:"):
        if cube_key is not None or gt_key is not None:
            raise DataError(f"'{text}': the synthetic scene has no array names; drop cube_key / gt_key")
        return _load_synthetic(text)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scene file not found")
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path, str | None, str | None], tuple]] = {
        ".npz": _read_npz,
        ".npy": _read_npy,
        ".mat": _read_mat,
        ".hdr": _read_envi,
    }
    if suffix not in readers:
        raise DataError(f"{path}: unknown scene format '{suffix}' (supported: {', '.join(readers)}, "
                        f"or 'synthetic[:SEED]')")
    cube, gt, wavelengths = readers[suffix](path, cube_key, gt_key)
    cube, gt, wavelengths = _check_scene(path, cube, gt, wavelengths)
    return Scene(name=path.stem, cube=cube, gt=gt, wavelengths=wavelengths)


def _load_synthetic(text: str) -> Scene:
    from data.synthetic import make_synthetic_scene

    seed_text = text.partition(":")[2] or "0"
    try:
        seed = int(seed_text)
    except ValueError:
        raise DataError(f"'{text}': the synthetic seed must be an integer, e.g. 'synthetic:3'") from None
    return make_synthetic_scene(seed=seed)


# ----------------------------------------------------------------------------------------------
# Picking arrays out of a container of named arrays (npz, mat v5, mat v7.3)

def _is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biuf"


def _pick_cube(path: Path, shapes: dict[str, tuple[tuple[int, ...], np.dtype]], cube_key: str | None) -> str:
    """Name of the cube array among `shapes` ({name: (shape, dtype)})."""
    keys = ", ".join(sorted(shapes)) or "none"
    if cube_key is not None:
        if cube_key not in shapes:
            raise DataError(f"{path}: no array named '{cube_key}' (cube_key); arrays found: {keys}")
        return cube_key
    if "cube" in shapes:
        return "cube"
    candidates = [k for k, (shape, dtype) in shapes.items() if len(shape) == 3 and _is_numeric(dtype)]
    if not candidates:
        raise DataError(f"{path}: no 3-D numeric array to use as the cube; arrays found: {keys}. "
                        f"Store it as 'cube' or pass cube_key")
    sizes = {k: int(np.prod(shapes[k][0])) for k in candidates}
    biggest = max(sizes.values())
    best = [k for k in candidates if sizes[k] == biggest]
    if len(best) > 1:
        raise DataError(f"{path}: several 3-D arrays could be the cube ({', '.join(sorted(best))}); pass cube_key")
    get_logger().info(f"{path.name}: using array '{best[0]}' as the cube")
    return best[0]


def _pick_gt(path: Path, arrays: dict[str, Callable[[], np.ndarray]], shapes: dict, cube_key: str,
             cube_shape: tuple[int, ...], gt_key: str | None) -> np.ndarray | None:
    """The gt array (read through `arrays[name]()`), or None when the file has none."""
    if gt_key is not None:
        if gt_key not in shapes:
            keys = ", ".join(sorted(shapes))
            raise DataError(f"{path}: no array named '{gt_key}' (gt_key); arrays found: {keys}")
        return arrays[gt_key]()
    by_name = {k.lower(): k for k in shapes if k != cube_key}
    for name in GT_NAMES:
        if name in by_name:
            return arrays[by_name[name]]()
    spatial = {tuple(cube_shape[:2]), tuple(cube_shape[1:])}
    found = []
    for k, (shape, dtype) in shapes.items():
        if k == cube_key or len(shape) != 2 or tuple(shape) not in spatial or not _is_numeric(dtype):
            continue
        values = np.asarray(arrays[k]())
        if np.isin(values, (0, 1)).all() and 0 < values.sum() < values.size / 2:
            found.append((k, values))
    if len(found) > 1:
        names = ", ".join(k for k, _ in found)
        raise DataError(f"{path}: several 0/1 arrays could be the gt ({names}); pass gt_key")
    if found:
        get_logger().info(f"{path.name}: using array '{found[0][0]}' as the gt")
        return found[0][1]
    return None


def _pick_wavelengths(arrays: dict[str, Callable[[], np.ndarray]], shapes: dict) -> np.ndarray | None:
    by_name = {k.lower(): k for k in shapes}
    for name in WAVELENGTH_NAMES:
        if name in by_name and _is_numeric(shapes[by_name[name]][1]):
            return np.asarray(arrays[by_name[name]](), dtype=np.float64).reshape(-1)
    return None


def _read_named(path: Path, shapes: dict, arrays: dict, cube_key: str | None, gt_key: str | None) -> tuple:
    key = _pick_cube(path, shapes, cube_key)
    cube = arrays[key]()
    gt = _pick_gt(path, arrays, shapes, key, tuple(shapes[key][0]), gt_key)
    return cube, gt, _pick_wavelengths(arrays, shapes)


# ----------------------------------------------------------------------------------------------
# Format readers: each returns (cube, gt | None, wavelengths | None) before the checks

_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


def _read_npz(path: Path, cube_key: str | None, gt_key: str | None) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as npz:
            cache = {k: npz[k] for k in npz.files}  # a scene file holds a few arrays: read them all
    except _CORRUPT as err:
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    shapes = {k: (v.shape, v.dtype) for k, v in cache.items()}
    arrays = {k: (lambda k=k: cache[k]) for k in cache}
    return _read_named(path, shapes, arrays, cube_key, gt_key)


def _read_npy(path: Path, cube_key: str | None, gt_key: str | None) -> tuple:
    if cube_key is not None or gt_key is not None:
        raise DataError(f"{path}: a .npy file holds only the cube; cube_key / gt_key do not apply "
                        f"(use an .npz file to ship a gt)")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a .npy file (no NumPy header)")
    try:
        cube = np.load(path, mmap_mode="r", allow_pickle=False)
    except _CORRUPT as err:
        raise DataError(f"{path}: not a readable .npy file ({type(err).__name__}: {err})") from None
    return cube, None, None


def _read_mat(path: Path, cube_key: str | None, gt_key: str | None) -> tuple:
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):  # MATLAB v7.3 (scipy would raise NotImplementedError)
        return _read_mat73(path, cube_key, gt_key)
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:  # scipy's parser raises a zoo of types on a damaged file (IndexError, MatReadError, ...)
        raise DataError(f"{path}: not a readable MATLAB file ({type(err).__name__}: {err})") from None
    content = {k: v for k, v in content.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    shapes = {k: (v.shape, v.dtype) for k, v in content.items()}
    arrays = {k: (lambda k=k: content[k]) for k in content}
    return _read_named(path, shapes, arrays, cube_key, gt_key)


def _read_mat73(path: Path, cube_key: str | None, gt_key: str | None) -> tuple:
    """MATLAB v7.3 = HDF5. Datasets are stored column-major: reverse every array's axes."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets = {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}
            shapes = {k: (tuple(reversed(v.shape)), v.dtype) for k, v in datasets.items()}
            arrays = {k: (lambda k=k: np.asarray(datasets[k][()]).T) for k in datasets}
            return _read_named(path, shapes, arrays, cube_key, gt_key)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: not a readable MATLAB v7.3 (HDF5) file ({type(err).__name__}: {err})") from None


def _read_envi(path: Path, cube_key: str | None, gt_key: str | None) -> tuple:
    from spectral.io import envi

    if cube_key is not None or gt_key is not None:
        raise DataError(f"{path}: an ENVI file holds only the cube; cube_key / gt_key do not apply")
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
    try:
        cube = image.open_memmap(interleave="bip")  # (rows, cols, bands), a view on the data file
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot map the ENVI data file ({type(err).__name__}: {err})") from None
    centers = getattr(image.bands, "centers", None)
    wavelengths = np.asarray(centers, dtype=np.float64) if centers else None
    return cube, None, wavelengths


# ----------------------------------------------------------------------------------------------
# Checks common to every format

def _check_scene(path: Path, cube: Any, gt: Any, wavelengths: np.ndarray | None) -> tuple:
    if not isinstance(cube, np.ndarray) or not _is_numeric(cube.dtype) or cube.dtype.kind == "b":
        dtype = getattr(cube, "dtype", type(cube).__name__)
        raise DataError(f"{path}: the cube must be a real numeric array, got {dtype}")
    if cube.ndim != 3:
        raise DataError(f"{path}: the cube must be 3-D (H, W, B), got shape {cube.shape}")
    if gt is not None:
        gt = np.asarray(gt)
    cube = _orient(path, cube, gt, wavelengths)
    height, width, bands = cube.shape
    if height < 1 or width < 1:
        raise DataError(f"{path}: the cube has an empty spatial axis, shape {cube.shape}")
    if bands < 2:
        raise DataError(f"{path}: the cube has {bands} band(s); anomaly detection needs spectra (B >= 2)")
    if not isinstance(cube, np.memmap) and cube.dtype != np.float32:
        cube = cube.astype(np.float32)
    if gt is not None:
        gt = _check_gt(path, gt, (height, width))
    if wavelengths is not None:
        wavelengths = wavelengths.reshape(-1)
        if wavelengths.size != bands or not np.isfinite(wavelengths).all():
            raise DataError(f"{path}: wavelengths must be {bands} finite values, got {wavelengths.size}")
        wavelengths = wavelengths.astype(np.float32)
    return cube, gt, wavelengths


def _orient(path: Path, cube: np.ndarray, gt: np.ndarray | None, wavelengths: np.ndarray | None) -> np.ndarray:
    """Apply the documented layout rule: transpose (B, H, W) -> (H, W, B) only on explicit evidence."""
    shape = cube.shape
    if wavelengths is not None:
        n = wavelengths.size
        if n == shape[2]:
            if n == shape[0]:
                get_logger().info(f"{path.name}: {n} wavelengths match axes 0 and 2 of {shape}: reading it as "
                                  f"(H, W, B); transpose the file if it is (B, H, W)")
            return cube
        if n == shape[0]:
            get_logger().info(f"{path.name}: {n} wavelengths match axis 0: reading the cube as (B, H, W)")
            return np.ascontiguousarray(cube.transpose(1, 2, 0))
        raise DataError(f"{path}: {n} wavelengths match no axis of the cube {shape}; expected (H, W, B)")
    if gt is not None and gt.shape == shape[1:] and gt.shape != shape[:2]:
        get_logger().info(f"{path.name}: gt {gt.shape} matches axes 1-2: reading the cube as (B, H, W)")
        return np.ascontiguousarray(cube.transpose(1, 2, 0))
    if gt is not None and gt.shape == shape[:2]:  # the gt confirms (H, W, B)
        return cube
    if path.suffix.lower() != ".hdr":  # an ENVI header states its interleave; other files cannot
        get_logger().info(f"{path.name}: no wavelengths or gt to confirm the layout: reading shape {shape} as "
                          f"(H, W, B) = {shape[0]} x {shape[1]} pixels of {shape[2]} band(s) (a (B, H, W) cube must "
                          f"ship its wavelengths or gt, or be transposed)")
    return cube


def _check_gt(path: Path, gt: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if gt.shape != hw:
        raise DataError(f"{path}: gt shape {gt.shape} does not match the cube's (H, W) = {hw}")
    if not _is_numeric(gt.dtype):
        raise DataError(f"{path}: gt must be numeric or boolean, got {gt.dtype}")
    values = np.unique(gt)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
        raise DataError(f"{path}: gt must hold only 0 (background) and 1 (anomaly); found values {shown}")
    return gt.astype(np.uint8)
