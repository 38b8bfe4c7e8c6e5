"""`Scene`: one hyperspectral scene in memory (what data.io.load_scene and data.synthetic return).

    scene = Scene(name="urban", cube=cube, gt=gt, wavelengths=wavelengths)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def synthetic_name(seed: int) -> str:
    """The name of the embedded synthetic scene of `seed` ('synthetic' for seed 0)."""
    return "synthetic" if seed == 0 else f"synthetic-{seed}"
