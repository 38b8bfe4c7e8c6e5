"""Read one hyperspectral scene from disk into a `Scene`.

    scene = load_scene("../shared/data/had/abu-airport-1.npz")   # cube (H, W, B), gt (H, W)
    scene = load_scene("big.npy")                                 # cube stays a read-only memmap
    scene = load_scene("urban.mat", cube_key="data", gt_key="map")
    scene = load_scene("scene.hdr")                               # ENVI header + its data file
    scene = load_scene("EMIT_L2A_RFL_....nc")                     # also .tif / .tiff, PRISMA .he5
    scene = load_scene("synthetic:3")                             # the embedded scene, seed 3
    scene = load_scene("scene.hdr", gt_path="mask.png")           # a gt from its own file
    scene = load_scene("bhw.npy", cube_layout="bhw")              # a (B, H, W) cube, transposed on reading

Formats (chosen by the file extension):
- `.npz`: `cube`, optional `gt`, optional `wavelengths` (other names via `cube_key` / `gt_key`).
- `.npy`: the cube only, opened with `mmap_mode='r'` and never read whole.
- `.mat`: MATLAB v5 (scipy) or v7.3 (HDF5, read with h5py and transposed back from MATLAB's
  column-major order).
- `.hdr`: ENVI header and its data file (data/envi.py): wavelengths, fwhm, bbl, data ignore value, reflectance
  scale factor, map info.
- `.tif` / `.tiff`: GeoTIFF / COG cube, one raster band per spectral band (data/geotiff.py); wavelengths from band
  metadata or an EnMAP / DESIS METADATA.XML beside it.
- `.nc`: EMIT L1B radiance / L2A reflectance NetCDF (data/emit.py).
- `.he5`: PRISMA L1 / L2 HDF-EOS5, VNIR and SWIR merged (data/prisma.py).
The product readers (.hdr .tif .tiff .nc .he5) also fill `Scene.fwhm`, `valid` (no-data pixels; a scene with no,
or at most 10%, valid pixels is an error), `bad_bands` and `geo`; see data/product.py for the no-data rule.

Which array is the cube / gt when no key is given: `cube` if present, else the largest 3-D numeric
array; `gt` (or `gt_mask`, `map`, `groundtruth`, `ground_truth`) if present, else the one 2-D
(H, W) array holding only 0/1 with fewer than half of its pixels set (two such arrays: an error
asking for `gt_key`). Keys picked this way are logged.

A separate gt file (`gt_path`, which then replaces any gt inside the scene file): `.npy` (one 2-D array),
`.npz` / `.mat` (the array named `gt_key`, else one of the gt names above, else the only 2-D numeric array),
ENVI `.hdr` (one band), or a PNG / TIFF image (grey-scale, or colour with equal channels; 0/255 reads as 0/1).

Layout (`cube_layout`): the cube is `(H, W, B)`; a `(B, H, W)` cube is transposed on reading (a `.npy`
memmap becomes a transposed view, still on disk). `auto` (the default) reads the layout from evidence:
wavelengths whose count matches axis 2 or axis 0, a gt (from the file or `gt_path`) of shape `shape[:2]` or
`shape[1:]`, an ENVI header (its interleave is known). Where the evidence allows both layouts (none given, or
a cube with equal axes) `auto` guesses (H, W, B) with a WARNING that names the guess. `hwb` / `bhw` are
applied as given, and are an error when the evidence contradicts them. Wavelengths that match no axis, and
evidence that disagrees with itself, are errors.

Checks: 3-D cube with H, W >= 1 and B >= 2 (one band carries no spectrum); integer cubes become
float32 (a `.npy` or ENVI memmap keeps its stored dtype: every consumer converts chunk by chunk); gt of
shape (H, W) with values in {0, 1} (bool ok), stored as uint8; a gt without any anomaly loads (the
metrics report AUC as undefined). Non-finite cube values load: `data.preprocess` repairs them (and logs it).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data.envi import envi_memmap, open_envi, read_envi
from data.emit import read_emit
from data.geotiff import read_geotiff
from data.prisma import read_prisma
from data.product import check_valid
from data.scene import Scene, synthetic_name
from utils.errors import DataError
from utils.logging import get_logger

GT_NAMES = ("gt", "gt_mask", "map", "groundtruth", "ground_truth")
WAVELENGTH_NAMES = ("wavelengths", "wavelength")
LAYOUTS = ("auto", "hwb", "bhw")
_HW_AXES = {"hwb": (0, 1, 2), "bhw": (1, 2, 0)}  # the cube's (H, W, B) axes under each layout
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
# sensor products: suffix -> (reader returning a Scene without gt, what to call the file in messages)
PRODUCT_READERS: dict[str, tuple[Callable[[Path], Scene], str]] = {
    ".hdr": (read_envi, "an ENVI file"),
    ".tif": (read_geotiff, "a GeoTIFF"),
    ".tiff": (read_geotiff, "a GeoTIFF"),
    ".nc": (read_emit, "an EMIT NetCDF"),
    ".he5": (read_prisma, "a PRISMA .he5 file"),
}


def load_scene(path: str | Path, cube_key: str | None = None, gt_key: str | None = None,
               gt_path: str | Path | None = None, cube_layout: str = "auto") -> Scene:
    """Load a scene file (or the pseudo-path `synthetic` / `synthetic:SEED`); see the module doc.

    `gt_key` names the gt array inside `gt_path` when that is given, else inside the scene file.
    """
    text = str(path)
    if cube_layout not in LAYOUTS:
        raise DataError(f"{text}: cube_layout must be one of {', '.join(LAYOUTS)}, got '{cube_layout}'")
    if _is_synthetic(text):
        if cube_key is not None or gt_key is not None or gt_path or cube_layout != "auto":
            raise DataError(f"'{text}': the synthetic scene has its own gt and layout; drop cube_key / gt_key / "
                            f"gt_path / cube_layout")
        return _load_synthetic(text)
    path = Path(path)
    require_scene_file(path)
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path, str | None, str | None, bool], tuple]] = {
        ".npz": _read_npz,
        ".npy": _read_npy,
        ".mat": _read_mat,
    }
    if suffix not in readers and suffix not in PRODUCT_READERS:
        raise DataError(f"{path}: unknown scene format '{suffix}' (supported: "
                        f"{', '.join([*readers, *PRODUCT_READERS])}, or 'synthetic[:SEED]')")
    product = None
    if suffix in PRODUCT_READERS:
        if cube_key is not None or (gt_key is not None and not gt_path):
            raise DataError(f"{path}: {PRODUCT_READERS[suffix][1]} holds only the cube; cube_key / gt_key do not "
                            f"apply (give the gt as gt_path)")
        product = PRODUCT_READERS[suffix][0](path)
        read = lambda p, ck, gk, find: (product.cube, None, product.wavelengths)  # noqa: E731
    else:
        read = readers[suffix]
    if gt_path:
        cube, _, wavelengths = read(path, cube_key, None, False)
        gt_source = Path(gt_path)
        gt = read_gt_file(gt_source, gt_key)
        get_logger().info(f"{path.name}: gt from {gt_source}")
    else:
        cube, gt, wavelengths = read(path, cube_key, gt_key, True)
        gt_source = path
    cube, gt, wavelengths = _check_scene(path, cube, gt, wavelengths, cube_layout, gt_source)
    if product is None:
        return Scene(name=path.stem, cube=cube, gt=gt, wavelengths=wavelengths)
    return Scene(name=path.stem, cube=cube, gt=gt, wavelengths=wavelengths,
                 fwhm=None if product.fwhm is None else np.asarray(product.fwhm, dtype=np.float32),
                 valid=check_valid(product.valid, cube.shape[:2], path), bad_bands=list(product.bad_bands),
                 geo=product.geo)


def scene_name(path: str | Path) -> str:
    """The name `load_scene(path)` gives its scene, without reading the file: the file stem, or the synthetic
    scene's name. The per-scene folders (checkpoints/anomaly/<name>, outputs/<name>) are found with it before
    any slow work starts."""
    text = str(path)
    return synthetic_name(_synthetic_seed(text)) if _is_synthetic(text) else Path(text).stem


def require_scene_file(path: str | Path) -> None:
    """`path` names an existing file or the synthetic scene (load_scene's first check, also run on its own
    before slow work starts)."""
    if not _is_synthetic(str(path)) and not Path(path).is_file():
        raise DataError(f"{path}: scene file not found")


def _is_synthetic(text: str) -> bool:
    return text == "synthetic" or text.startswith("synthetic:")


def _synthetic_seed(text: str) -> int:
    seed_text = text.partition(":")[2] or "0"
    try:
        return int(seed_text)
    except ValueError:
        raise DataError(f"'{text}': the synthetic seed must be an integer, e.g. 'synthetic:3'") from None


def _load_synthetic(text: str) -> Scene:
    from data.synthetic import make_synthetic_scene

    return make_synthetic_scene(seed=_synthetic_seed(text))


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


def _read_named(path: Path, shapes: dict, arrays: dict, cube_key: str | None, gt_key: str | None,
                find_gt: bool) -> tuple:
    key = _pick_cube(path, shapes, cube_key)
    cube = arrays[key]()
    gt = _pick_gt(path, arrays, shapes, key, tuple(shapes[key][0]), gt_key) if find_gt else None
    return cube, gt, _pick_wavelengths(arrays, shapes)


def _gt_from_named(path: Path, shapes: dict, arrays: dict, gt_key: str | None) -> np.ndarray:
    """The gt array of a gt file: `gt_key`, else a gt name, else the only 2-D numeric array."""
    keys = ", ".join(sorted(shapes)) or "none"
    if gt_key is not None:
        if gt_key not in shapes:
            raise DataError(f"{path}: no array named '{gt_key}' (gt_key); arrays found: {keys}")
        return arrays[gt_key]()
    by_name = {k.lower(): k for k in shapes}
    for name in GT_NAMES:
        if name in by_name:
            return arrays[by_name[name]]()
    flat = [k for k, (shape, dtype) in shapes.items() if len(shape) == 2 and _is_numeric(dtype)]
    if len(flat) != 1:
        raise DataError(f"{path}: {'several' if flat else 'no'} 2-D arrays could be the gt; arrays found: {keys}. "
                        f"Name it 'gt' or pass gt_key")
    return arrays[flat[0]]()


# ----------------------------------------------------------------------------------------------
# Containers of named arrays: each calls `use(shapes, arrays)` while the file is open

_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)
Use = Callable[[dict, dict], Any]  # (shapes {name: (shape, dtype)}, arrays {name: () -> ndarray}) -> result


def _with_npz(path: Path, use: Use) -> Any:
    try:
        with np.load(path, allow_pickle=False) as npz:
            cache = {k: npz[k] for k in npz.files}  # a scene file holds a few arrays: read them all
    except _CORRUPT as err:
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    shapes = {k: (v.shape, v.dtype) for k, v in cache.items()}
    arrays = {k: (lambda k=k: cache[k]) for k in cache}
    return use(shapes, arrays)


def _with_mat(path: Path, use: Use) -> Any:
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):  # MATLAB v7.3 (scipy would raise NotImplementedError)
        return _with_mat73(path, use)
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:  # scipy's parser raises a zoo of types on a damaged file (IndexError, MatReadError, ...)
        raise DataError(f"{path}: not a readable MATLAB file ({type(err).__name__}: {err})") from None
    content = {k: v for k, v in content.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    shapes = {k: (v.shape, v.dtype) for k, v in content.items()}
    arrays = {k: (lambda k=k: content[k]) for k in content}
    return use(shapes, arrays)


def _with_mat73(path: Path, use: Use) -> Any:
    """MATLAB v7.3 = HDF5. Datasets are stored column-major: reverse every array's axes."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            datasets = {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}
            shapes = {k: (tuple(reversed(v.shape)), v.dtype) for k, v in datasets.items()}
            arrays = {k: (lambda k=k: np.asarray(datasets[k][()]).T) for k in datasets}
            return use(shapes, arrays)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: not a readable MATLAB v7.3 (HDF5) file ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------------------------
# Format readers: each returns (cube, gt | None, wavelengths | None) before the checks

def _read_npz(path: Path, cube_key: str | None, gt_key: str | None, find_gt: bool) -> tuple:
    return _with_npz(path, lambda shapes, arrays: _read_named(path, shapes, arrays, cube_key, gt_key, find_gt))


def _read_mat(path: Path, cube_key: str | None, gt_key: str | None, find_gt: bool) -> tuple:
    return _with_mat(path, lambda shapes, arrays: _read_named(path, shapes, arrays, cube_key, gt_key, find_gt))


def _read_npy(path: Path, cube_key: str | None, gt_key: str | None, find_gt: bool) -> tuple:
    if cube_key is not None or gt_key is not None:
        raise DataError(f"{path}: a .npy file holds only the cube; cube_key / gt_key do not apply "
                        f"(give the gt as gt_path, or use an .npz file)")
    return _open_npy(path), None, None


def _open_npy(path: Path) -> np.ndarray:
    """The array of a .npy file as a read-only memmap."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a .npy file (no NumPy header)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _CORRUPT as err:
        raise DataError(f"{path}: not a readable .npy file ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------------------------
# A gt mask in a file of its own (gt_path)

def read_gt_file(path: Path, gt_key: str | None = None) -> np.ndarray:
    """The (H, W) mask stored in `path` (see the module doc for formats); values are checked later."""
    if not path.is_file():
        raise DataError(f"{path}: gt file not found (gt_path)")
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path], np.ndarray]] = {
        ".npy": lambda p: np.asarray(_open_npy(p)),
        ".npz": lambda p: _with_npz(p, lambda shapes, arrays: _gt_from_named(p, shapes, arrays, gt_key)),
        ".mat": lambda p: _with_mat(p, lambda shapes, arrays: _gt_from_named(p, shapes, arrays, gt_key)),
        ".hdr": _read_envi_gt,
        **{image: _read_image_gt for image in IMAGE_SUFFIXES},
    }
    if suffix not in readers:
        raise DataError(f"{path}: unknown gt format '{suffix}' (supported: {', '.join(readers)})")
    if gt_key is not None and suffix not in (".npz", ".mat"):
        raise DataError(f"{path}: a {suffix} gt file holds one mask; gt_key does not apply")
    gt = np.asarray(readers[suffix](path))
    if gt.ndim != 2:
        raise DataError(f"{path}: the gt must be a 2-D (H, W) mask, got shape {gt.shape}")
    return gt


def _read_envi_gt(path: Path) -> np.ndarray:
    mask = envi_memmap(path, open_envi(path))  # (H, W, bands)
    if mask.shape[2] != 1:
        raise DataError(f"{path}: an ENVI gt must have one band, this one has {mask.shape[2]}")
    return np.asarray(mask[:, :, 0])


def _read_image_gt(path: Path) -> np.ndarray:
    """A PNG / TIFF mask: grey-scale, or colour with equal channels; 0/255 becomes 0/1."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise DataError(f"{path}: a multi-page image ({image.n_frames} pages); the gt is one 2-D mask")
            pixels = np.asarray(image)  # (H, W) or (H, W, channels)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    if pixels.ndim == 3:
        colour = pixels[..., :3] if pixels.shape[2] in (3, 4) else pixels  # drop an alpha channel
        if not (colour == colour[..., :1]).all():
            raise DataError(f"{path}: a colour image; save the gt as a grey-scale (or black and white) mask")
        pixels = colour[..., 0]
    if pixels.dtype != bool and np.isin(pixels, (0, 255)).all():
        pixels = pixels // 255  # an 8-bit black and white mask
    return pixels


# ----------------------------------------------------------------------------------------------
# Checks common to every format

def _check_scene(path: Path, cube: Any, gt: Any, wavelengths: np.ndarray | None, cube_layout: str,
                 gt_source: Path) -> tuple:
    """Checked (cube (H, W, B), gt (H, W) uint8 | None, wavelengths (B,) float32 | None); `gt_source` is the
    file the gt came from (the scene file, or gt_path), named in gt errors."""
    if not isinstance(cube, np.ndarray) or not _is_numeric(cube.dtype) or cube.dtype.kind == "b":
        dtype = getattr(cube, "dtype", type(cube).__name__)
        raise DataError(f"{path}: the cube must be a real numeric array, got {dtype}")
    if cube.ndim != 3:
        raise DataError(f"{path}: the cube must be 3-D (H, W, B), got shape {cube.shape}")
    if gt is not None:
        gt = np.asarray(gt)
    layout = _choose_layout(path, cube.shape, gt, wavelengths, cube_layout)
    cube = _to_hwb(cube) if layout == "bhw" else cube
    height, width, bands = cube.shape
    if height < 1 or width < 1:
        raise DataError(f"{path}: the cube has an empty spatial axis, shape {cube.shape}")
    if bands < 2:
        raise DataError(f"{path}: the cube has {bands} band(s); anomaly detection needs spectra (B >= 2)")
    if not isinstance(cube, np.memmap) and cube.dtype != np.float32:
        cube = cube.astype(np.float32)
    if gt is not None:
        gt = _check_gt(gt_source, gt, (height, width))
    if wavelengths is not None:
        wavelengths = wavelengths.reshape(-1)
        if wavelengths.size != bands or not np.isfinite(wavelengths).all():
            raise DataError(f"{path}: wavelengths must be {bands} finite values, got {wavelengths.size}")
        wavelengths = wavelengths.astype(np.float32)
    return cube, gt, wavelengths


def _to_hwb(cube: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (H, W, B): a transposed view of a memmap (the file stays on disk), else a contiguous copy."""
    hwb = cube.transpose(1, 2, 0)
    return hwb if isinstance(cube, np.memmap) else np.ascontiguousarray(hwb)


def _describe(shape: tuple[int, ...], layout: str) -> str:
    h, w, b = (shape[axis] for axis in _HW_AXES[layout])
    return f"({'H, W, B' if layout == 'hwb' else 'B, H, W'}) = {h} x {w} pixels of {b} bands"


def _layout_evidence(path: Path, shape: tuple[int, ...], gt: np.ndarray | None,
                     wavelengths: np.ndarray | None) -> list[tuple[str, set[str]]]:
    """[(what, the layouts it allows)] for each piece of evidence about the cube's layout."""
    evidence = []
    if path.suffix.lower() == ".hdr":
        evidence.append(("the ENVI header", {"hwb"}))  # read with interleave='bip': (rows, cols, bands)
    elif path.suffix.lower() in PRODUCT_READERS:
        evidence.append(("the product's layout", {"hwb"}))  # every product reader returns (rows, cols, bands)
    if wavelengths is not None:
        n = wavelengths.size
        fits = {layout for layout, axes in _HW_AXES.items() if shape[axes[2]] == n}
        if not fits:
            raise DataError(f"{path}: {n} wavelengths match no axis of the cube {shape}; expected (H, W, B)")
        evidence.append((f"{n} wavelengths", fits))
    if gt is not None:
        fits = {layout for layout, axes in _HW_AXES.items() if gt.shape == (shape[axes[0]], shape[axes[1]])}
        if fits:  # a gt that fits neither is reported by _check_gt
            evidence.append((f"the gt's shape {gt.shape}", fits))
    return evidence


def _choose_layout(path: Path, shape: tuple[int, ...], gt: np.ndarray | None, wavelengths: np.ndarray | None,
                   cube_layout: str) -> str:
    """'hwb' or 'bhw' for a 3-D cube of `shape`: `cube_layout` when the evidence allows it, else an error;
    for 'auto' the one layout the evidence allows, else 'hwb' with a WARNING naming the guess."""
    evidence = _layout_evidence(path, shape, gt, wavelengths)
    allowed = set(_HW_AXES)
    for _, fits in evidence:
        allowed &= fits
    if not allowed:
        said = "; ".join(f"{what}: {' or '.join(sorted(fits))}" for what, fits in evidence)
        raise DataError(f"{path}: the evidence on the layout of the cube {shape} disagrees ({said})")
    if cube_layout != "auto":
        against = [what for what, fits in evidence if cube_layout not in fits]
        if against:
            other = next(iter(allowed))
            raise DataError(f"{path}: cube_layout {cube_layout} reads the cube {shape} as {_describe(shape, cube_layout)}, "
                            f"which contradicts {' and '.join(against)}; use cube_layout {other} or auto")
        return cube_layout
    if len(allowed) == 1:
        layout = next(iter(allowed))
        if layout == "bhw":
            whats = " and ".join(what for what, _ in evidence)
            get_logger().info(f"{path.name}: reading the cube {shape} as {_describe(shape, 'bhw')}, from {whats}")
        return layout
    why = (f"{' and '.join(what for what, _ in evidence)} fit both layouts" if evidence
           else "no wavelengths or gt to tell")
    get_logger().warning(f"{path.name}: guessing the layout of the cube {shape}: {_describe(shape, 'hwb')} ({why}); "
                         f"set cube_layout: bhw if it is (B, H, W), or cube_layout: hwb to confirm")
    return "hwb"


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
