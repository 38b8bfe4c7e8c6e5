"""Every shared benchmark scene loads with the expected shape and gt, and prepares to finite values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.io import load_scene
from data.preprocess import SpectralPreprocessor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# name: (H, W, B, anomaly pixels), from ../shared/data/README.md
HAD = {
    "abu-airport-1": (100, 100, 205, 144),
    "abu-airport-2": (100, 100, 205, 87),
    "abu-airport-3": (100, 100, 205, 170),
    "abu-airport-4": (100, 100, 191, 60),
    "abu-urban-1": (100, 100, 204, 67),
    "abu-urban-2": (100, 100, 207, 155),
    "abu-urban-3": (100, 100, 191, 52),
    "abu-urban-4": (100, 100, 205, 272),
    "abu-urban-5": (100, 100, 205, 232),
    "hydice-urban": (80, 100, 162, 19),
}
PRETRAIN = {
    "jasper-ridge": (100, 100, 198),
    "muufl-gulfport-sub": (51, 88, 72),
    "hsitoolkit-vi-demo": (90, 90, 224),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "had").is_dir(), reason=f"shared benchmark scenes not present at {DATA / 'had'}"),
]


def test_had_folder_holds_the_listed_scenes():
    assert sorted(p.stem for p in (DATA / "had").glob("*.npz")) == sorted(HAD)


@pytest.mark.parametrize("name", sorted(HAD))
def test_had_scene(name):
    scene = load_scene(DATA / "had" / f"{name}.npz")
    height, width, bands, anomalies = HAD[name]
    assert scene.name == name and scene.cube.shape == (height, width, bands) and scene.cube.dtype == np.float32
    assert scene.gt.shape == (height, width) and scene.gt.dtype == np.uint8
    assert set(np.unique(scene.gt)) == {0, 1} and int(scene.gt.sum()) == anomalies
    prepared = SpectralPreprocessor.fit(scene.cube, 64, "minmax").transform(scene.cube)
    assert prepared.shape == (height, width, 64) and np.isfinite(prepared).all()


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_pretrain_scene(name):
    path = DATA / "pretrain" / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    scene = load_scene(path)
    assert scene.cube.shape == PRETRAIN[name] and scene.gt is None
    if scene.wavelengths is not None:
        assert scene.wavelengths.shape == (PRETRAIN[name][2],)
    prep = SpectralPreprocessor.fit(scene.cube, 64, "minmax", scene.wavelengths)
    assert np.isfinite(prep.transform(scene.cube)).all()
