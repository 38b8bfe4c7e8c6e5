"""Property test: whatever array lands in a scene file, the data layer either yields finite float32
patches or raises the project's DataError / ConfigError, never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.datasets import HSIPatchExtractor
from data.io import load_scene
from data.preprocess import SpectralPreprocessor
from utils.errors import ConfigError, DataError

DTYPES = ["uint8", "int16", "int64", "float16", "float32", "float64", "bool"]
NAN_PATTERNS = ["none", "scattered", "one band", "all", "inf pixel", "mostly"]
GT_KINDS = ["none", "good", "empty", "wrong shape", "values 0/2"]


@st.composite
def scene_files(draw, always_valid_layout: bool = False):
    """Specs of scene files; with always_valid_layout, a numeric 3-D cube and a usable gt (or none)."""
    ndim = 3 if always_valid_layout else draw(st.sampled_from([1, 2, 3, 3, 3, 4]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim - 1, max_size=ndim - 1)))
    shape += (draw(st.integers(2 if always_valid_layout else 1, 8)),)  # bands
    dtypes = [d for d in DTYPES if d != "bool"] if always_valid_layout else DTYPES
    return {
        "shape": shape,
        "dtype": draw(st.sampled_from(dtypes)),
        "scale": draw(st.sampled_from([1.0, 1e-30, 1e4, 1e30])),
        "nan": draw(st.sampled_from(NAN_PATTERNS)),
        "gt": draw(st.sampled_from(GT_KINDS[:3] if always_valid_layout else GT_KINDS)),
        "seed": draw(st.integers(0, 2**16)),
    }


def write_scene(folder: Path, spec: dict) -> Path:
    rng = np.random.default_rng(spec["seed"])
    shape = spec["shape"]
    cube = rng.standard_normal(shape) * spec["scale"]
    if cube.ndim == 3 and spec["dtype"].startswith("float"):
        if spec["nan"] == "scattered":
            cube[rng.random(shape) < 0.1] = np.nan
        elif spec["nan"] == "one band":
            cube[..., 0] = np.nan
        elif spec["nan"] == "all":
            cube[:] = np.nan
        elif spec["nan"] == "inf pixel":
            cube[0, 0] = np.inf
        elif spec["nan"] == "mostly":
            cube[rng.random(shape) < 0.8] = np.nan
    with np.errstate(all="ignore"):
        cube = cube.astype(spec["dtype"])
    arrays = {"cube": cube}
    hw = shape[:2] if len(shape) >= 2 else (1, 1)
    if spec["gt"] == "good":
        arrays["gt"] = (rng.random(hw) < 0.3).astype(np.uint8)
    elif spec["gt"] == "empty":
        arrays["gt"] = np.zeros(hw, dtype=bool)
    elif spec["gt"] == "wrong shape":
        arrays["gt"] = np.zeros((hw[0] + 1, hw[1]), dtype=np.uint8)
    elif spec["gt"] == "values 0/2":
        arrays["gt"] = np.full(hw, 2, dtype=np.int32)
    path = folder / "scene.npz"
    np.savez(path, **arrays)
    return path


def run_pipeline(spec: dict, num_bands: int, method: str, patch_size: int, stride: int | None) -> bool:
    """Load, prepare and cut the scene; True when it went through (and the outputs are valid)."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_scene(Path(folder), spec)
        try:
            scene = load_scene(path)
            prep = SpectralPreprocessor.fit(scene.cube, num_bands, method, scene.wavelengths)
            extractor = HSIPatchExtractor(patch_size, stride)
        except (DataError, ConfigError):
            return False
    cube = prep.transform(scene.cube)
    assert cube.dtype == np.float32 and cube.shape == (*scene.cube.shape[:2], num_bands)
    assert np.isfinite(cube).all()
    patches = np.concatenate([p for p, _ in extractor.iter_batches(scene.cube, 5, transform=prep.transform)])
    assert patches.shape == (len(extractor.coords(*cube.shape[:2])), num_bands, patch_size, patch_size)
    assert patches.dtype == np.float32 and np.isfinite(patches).all()
    assert scene.gt is None or (scene.gt.shape == cube.shape[:2] and set(np.unique(scene.gt)) <= {0, 1})
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=scene_files(), num_bands=st.integers(0, 9), method=st.sampled_from(["minmax", "zscore", "l1"]),
       patch_size=st.integers(0, 5), stride=st.one_of(st.none(), st.integers(0, 6)))
def test_any_input_loads_or_raises_project_errors(spec, num_bands, method, patch_size, stride):
    run_pipeline(spec, num_bands, method, patch_size, stride)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=scene_files(always_valid_layout=True), num_bands=st.integers(2, 9),
       method=st.sampled_from(["minmax", "zscore"]), patch_size=st.integers(1, 5))
def test_valid_layouts_with_any_values_give_finite_patches(spec, num_bands, method, patch_size):
    went_through = run_pipeline(spec, num_bands, method, patch_size, None)
    height, width, _ = spec["shape"]
    plain = spec["nan"] == "none" and spec["dtype"] in ("float32", "float64") and spec["scale"] in (1.0, 1e4)
    if plain and height * width >= 2:  # random finite values in >= 2 pixels: nothing may stop them
        assert went_through
