"""The embedded default scene (docs/design.md "The synthetic scene"): reproducible, labelled, and fair to RX.

    scene = make_synthetic_scene(seed=0)       # or load_scene("synthetic:0"); 100 x 100 x 128

Model (linear mixing, reflectance-like values in about [0, 0.8]):
- wavelengths: `num_bands` evenly spaced over 400-2500 nm;
- `num_endmembers` smooth background spectra: a sigmoid edge plus Gaussian bumps and dips;
- abundances: one Gaussian-smoothed white-noise field per endmember, softmax across endmembers,
  so materials change smoothly over the image and every pixel is a mixture; a smooth +-10 %
  brightness field (illumination) multiplies the background;
- unlabelled clutter: two rare background materials implanted like the targets (the natural false
  alarms of real scenes);
- two target materials, each a background endmember plus one absorption / reflection feature of
  relative norm `target_contrast`, implanted as
  * single-pixel sub-pixel targets: target fraction uniform in [0.3, 0.8], the rest background,
  * 2 x 2 and 3 x 3 objects: per-pixel fraction uniform in [0.5, 1.0],
  about `anomaly_fraction` of the pixels in all (40 % in 3 x 3, 30 % in 2 x 2, the rest single),
  never touching each other or the clutter; `gt` marks every pixel holding target;
- white Gaussian sensor noise at `snr_db` (signal power over noise power, whole cube).

A fair test: global RX (Mahalanobis distance to the scene mean) finds the targets well but not
perfectly. Measured ROC AUC at the defaults: seed 0 (the default scene) 0.909, seeds 0-7 from 0.909 to
0.994, mean 0.965 (tests/test_data_synthetic.py checks seed 0).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from data.scene import Scene, synthetic_name
from utils.errors import ConfigError


def _smooth_spectrum(rng: np.random.Generator, wavelengths: np.ndarray) -> np.ndarray:
    """(B,) positive smooth spectrum: sigmoid edge + 3 Gaussian features, scaled into [0.05, 0.7]."""
    edge = rng.uniform(500, 1500)
    spectrum = rng.uniform(0.2, 1.0) / (1 + np.exp(-(wavelengths - edge) / rng.uniform(20, 150)))
    for _ in range(3):
        centre, width = rng.uniform(400, 2500), rng.uniform(40, 300)
        spectrum += rng.uniform(-0.5, 0.8) * np.exp(-0.5 * ((wavelengths - centre) / width) ** 2)
    spectrum -= spectrum.min()
    return 0.05 + rng.uniform(0.3, 0.65) * spectrum / max(spectrum.max(), 1e-12)


def _abundances(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """(H, W, count) smooth mixing fractions summing to 1 per pixel."""
    sigma = max(1.0, min(height, width) / 8)  # patches of material about an eighth of the image wide
    fields = np.stack([gaussian_filter(rng.standard_normal((height, width)), sigma, mode="wrap")
                       for _ in range(count)], axis=-1)  # (H, W, E)
    fields = 3.0 * (fields - fields.mean()) / fields.std()
    weights = np.exp(fields - fields.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def _place(rng: np.random.Generator, occupied: np.ndarray, size: int) -> tuple[int, int] | None:
    """Top-left of a free size x size square with a one-pixel free margin, or None after 1000 tries."""
    height, width = occupied.shape
    for _ in range(1000):
        r, c = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if not occupied[max(r - 1, 0):r + size + 1, max(c - 1, 0):c + size + 1].any():
            occupied[r:r + size, c:c + size] = True
            return r, c
    return None


def _target_spectrum(rng: np.random.Generator, wavelengths: np.ndarray, endmembers: np.ndarray,
                     contrast: float) -> np.ndarray:
    """(B,) a background endmember plus one absorption / reflection feature of relative norm `contrast`.

    Fixing the feature's norm (not its peak) keeps the targets' difficulty the same from seed to seed.
    """
    base = endmembers[rng.integers(len(endmembers))]
    centre, width = rng.uniform(600, 2300), rng.uniform(50, 200)
    feature = rng.choice([-1.0, 1.0]) * base * np.exp(-0.5 * ((wavelengths - centre) / width) ** 2)
    return base + contrast * np.linalg.norm(base) / np.linalg.norm(feature) * feature


def _implant(rng: np.random.Generator, occupied: np.ndarray, wanted: int,
             single_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Place about `wanted` pixels of objects: 40 % in 3 x 3, 30 % in 2 x 2, the rest single pixels.

    Returns (fraction (H, W) in [0, 1], material (H, W) in {0, 1}); objects get per-pixel fractions
    in [0.5, 1.0], single pixels in `single_range`. Marks the pixels in `occupied`.
    """
    n_3x3 = round(0.4 * wanted / 9)
    n_2x2 = round(0.3 * wanted / 4)
    n_single = max(1, wanted - 9 * n_3x3 - 4 * n_2x2)
    fraction = np.zeros(occupied.shape)
    material = np.zeros(occupied.shape, dtype=np.int64)
    for size, count, (low, high) in ((3, n_3x3, (0.5, 1.0)), (2, n_2x2, (0.5, 1.0)), (1, n_single, single_range)):
        for _ in range(count):
            corner = _place(rng, occupied, size)
            if corner is None:
                break  # the image is full; fewer objects of this size
            r, c = corner
            fraction[r:r + size, c:c + size] = rng.uniform(low, high, (size, size))
            material[r:r + size, c:c + size] = rng.integers(0, 2)
    return fraction, material


def make_synthetic_scene(height: int = 100, width: int = 100, num_bands: int = 128, seed: int = 0,
                         num_endmembers: int = 5, snr_db: float = 35.0,
                         anomaly_fraction: float = 0.007, target_contrast: float = 0.08) -> Scene:
    """A labelled synthetic scene (module doc); the same arguments give the same scene.

    Named 'synthetic' for seed 0, else 'synthetic-SEED'.
    """
    if height < 8 or width < 8:
        raise ConfigError(f"synthetic scene must be at least 8 x 8, got {height} x {width}")
    if num_bands < 2:
        raise ConfigError(f"synthetic num_bands must be >= 2, got {num_bands}")
    if not 2 <= num_endmembers <= 12:
        raise ConfigError(f"synthetic num_endmembers must be in 2..12, got {num_endmembers}")
    if not snr_db > 0:
        raise ConfigError(f"synthetic snr_db must be > 0, got {snr_db}")
    if not 0 < anomaly_fraction <= 0.05:
        raise ConfigError(f"synthetic anomaly_fraction must be in (0, 0.05], got {anomaly_fraction}")
    if not target_contrast > 0:
        raise ConfigError(f"synthetic target_contrast must be > 0, got {target_contrast}")
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(400.0, 2500.0, num_bands)
    endmembers = np.stack([_smooth_spectrum(rng, wavelengths) for _ in range(num_endmembers)])  # (E, B)
    targets = np.stack([_target_spectrum(rng, wavelengths, endmembers, target_contrast)
                        for _ in range(2)])  # (2, B)
    clutter = np.stack([_smooth_spectrum(rng, wavelengths) for _ in range(2)])  # (2, B)
    cube = _abundances(rng, height, width, num_endmembers) @ endmembers  # (H, W, B)
    sigma = max(1.0, min(height, width) / 8)
    brightness = gaussian_filter(rng.standard_normal((height, width)), sigma, mode="wrap")  # (H, W)
    cube *= (1 + 0.1 * brightness / brightness.std())[..., None]  # illumination / topography

    wanted = max(1, round(anomaly_fraction * height * width))
    occupied = np.zeros((height, width), dtype=bool)
    # Unlabelled clutter first: rare background materials, the natural false alarms of real scenes.
    clutter_fraction, clutter_material = _implant(rng, occupied, wanted, (0.3, 1.0))
    target_fraction, target_material = _implant(rng, occupied, wanted, (0.3, 0.8))
    for fraction, material, spectra in ((clutter_fraction, clutter_material, clutter),
                                        (target_fraction, target_material, targets)):
        cube = (1 - fraction[..., None]) * cube + fraction[..., None] * spectra[material]  # (H, W, B)
    noise_std = np.sqrt(np.mean(cube**2) / 10 ** (snr_db / 10))
    cube = cube + noise_std * rng.standard_normal(cube.shape)
    return Scene(name=synthetic_name(seed), cube=cube.astype(np.float32), gt=(target_fraction > 0).astype(np.uint8),
                 wavelengths=wavelengths.astype(np.float32))
