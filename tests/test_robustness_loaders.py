"""Property test over every scene format (extends tests/test_data_robustness.py, which covers .npz): random
shapes, dtypes, NaN patterns, layouts and truncations written as .npz, .npy, .mat v5, .mat v7.3 (HDF5) and
ENVI; each file either loads into a valid scene whose patches come out finite, or raises the project's
own DataError / ConfigError. Nothing else may escape."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from data.datasets import HSIPatchExtractor
from data.io import load_scene
from data.preprocess import SpectralPreprocessor
from utils.errors import ConfigError, DataError

FORMATS = ["npz", "npy", "mat", "mat73", "hdr"]
DTYPES = ["uint8", "uint16", "int16", "int32", "float32", "float64"]
NAN = ["none", "pixels", "band", "all", "inf"]


@st.composite
def scenes(draw):
    ndim = draw(st.sampled_from([2, 3, 3, 3, 3, 4]))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim)))
    return {
        "format": draw(st.sampled_from(FORMATS)),
        "shape": shape,
        "dtype": draw(st.sampled_from(DTYPES)),
        "nan": draw(st.sampled_from(NAN)),
        "bhw": draw(st.booleans()),  # store the cube (B, H, W), with wavelengths as the evidence
        "truncate": draw(st.sampled_from([None, None, None, 0.0, 0.3, 0.9])),
        "seed": draw(st.integers(0, 2**16)),
    }


def write(folder: Path, spec: dict) -> Path:
    rng = np.random.default_rng(spec["seed"])
    cube = rng.standard_normal(spec["shape"]) * 50 + 100
    if spec["dtype"].startswith("float") and cube.ndim == 3:
        if spec["nan"] == "pixels":
            cube[rng.random(cube.shape) < 0.2] = np.nan
        elif spec["nan"] == "band":
            cube[..., 0] = np.nan
        elif spec["nan"] == "all":
            cube[:] = np.nan
        elif spec["nan"] == "inf":
            cube.flat[0] = -np.inf
    with np.errstate(all="ignore"):
        cube = cube.astype(spec["dtype"])
    wavelengths = None
    if cube.ndim == 3 and spec["bhw"]:
        wavelengths = np.linspace(400.0, 1000.0, cube.shape[-1])
        cube = np.ascontiguousarray(np.moveaxis(cube, -1, 0))  # (B, H, W)
    arrays = {"cube": cube} if wavelengths is None else {"cube": cube, "wavelengths": wavelengths}
    fmt = spec["format"]
    if fmt == "npz":
        path = folder / "s.npz"
        np.savez(path, **arrays)
    elif fmt == "npy":
        path = folder / "s.npy"
        np.save(path, cube)
    elif fmt == "mat":
        path = folder / "s.mat"
        scipy.io.savemat(path, arrays)
    elif fmt == "mat73":
        path = folder / "s.mat"
        with h5py.File(path, "w") as f:  # MATLAB v7.3 stores column-major: the transpose
            for name, value in arrays.items():
                f[name] = np.asarray(value).T
    else:
        from spectral.io import envi

        path = folder / "s.hdr"
        assume(cube.ndim == 3 and wavelengths is None)  # an ENVI file is 3-D and states its interleave
        meta = {"wavelength": [float(w) for w in np.linspace(400.0, 1000.0, cube.shape[-1])]}
        envi.save_image(str(path), cube, dtype=cube.dtype, interleave="bsq", metadata=meta, force=True)
    if spec["truncate"] is not None:
        target = folder / "s.img" if fmt == "hdr" else path
        data = target.read_bytes()
        target.write_bytes(data[: int(len(data) * spec["truncate"])])
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=scenes(), num_bands=st.integers(2, 6), patch_size=st.integers(1, 9), stride=st.integers(1, 9))
def test_every_format_loads_a_valid_scene_or_raises_a_project_error(spec, num_bands, patch_size, stride):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), spec)
        try:
            scene = load_scene(path)
        except DataError:
            event(f"{spec['format']}: refused by load_scene")
            return
        cube = scene.cube
        assert cube.ndim == 3 and cube.shape[0] >= 1 and cube.shape[1] >= 1 and cube.shape[2] >= 2
        assert cube.dtype == np.float32 or isinstance(cube, np.memmap)
        shape = spec["shape"]
        if (spec["bhw"] and len(shape) == 3 and shape[1] != shape[2] and spec["format"] != "npy"
                and scene.wavelengths is not None):  # stored (B, H, W); a truncated file may have lost the wavelengths
            assert cube.shape == shape  # read back as (H, W, B): the wavelengths name the band axis
        try:
            prep = SpectralPreprocessor.fit(cube, num_bands, "minmax", scene.wavelengths, source=str(path))
            extractor = HSIPatchExtractor(patch_size, min(stride, patch_size))
        except DataError as err:
            assert str(path) in str(err)
            event(f"{spec['format']}: refused by the preprocessor")
            return
        event(f"{spec['format']}: patches")
        batches = list(extractor.iter_batches(cube, 7, transform=prep.transform))
        patches = np.concatenate([p for p, _ in batches])  # (N, num_bands, S, S)
        coords = np.concatenate([c for _, c in batches])  # (N, 2)
        assert patches.shape == (len(extractor.coords(*cube.shape[:2])), num_bands, patch_size, patch_size)
        assert patches.dtype == np.float32 and np.isfinite(patches).all()
        assert (coords >= -extractor.pad).all() and (coords[:, 0] < cube.shape[0]).all()


@given(patch_size=st.integers(-2, 12), stride=st.one_of(st.none(), st.integers(-2, 12)),
       height=st.integers(1, 9), width=st.integers(1, 9))
@settings(max_examples=60, deadline=None)
def test_patch_extractor_covers_every_pixel_or_refuses(patch_size, stride, height, width):
    try:
        extractor = HSIPatchExtractor(patch_size, stride)
    except ConfigError:
        return
    cube = np.arange(height * width * 2, dtype=np.float32).reshape(height, width, 2)
    patches, coords = extractor.extract_patches(cube)  # (N, 2, S, S), (N, 2)
    covered = np.zeros((height, width), dtype=bool)
    for (r, c) in coords:
        covered[max(r, 0):r + patch_size, max(c, 0):c + patch_size] = True
    assert covered.all() and np.isfinite(patches).all()
    assert set(np.unique(patches)) <= set(np.unique(cube))  # reflect padding only repeats real pixels
