"""Spectral preprocessing (docs/design.md "Band resampling"): one input width for every sensor.

    prep = SpectralPreprocessor.fit(scene.cube, num_bands=64, method="minmax", wavelengths=scene.wavelengths)
    block = prep.transform(cube[r0:r1])           # (..., B_raw) -> (..., 64) float32
    prep2 = SpectralPreprocessor.from_state(prep.state())   # plain types: goes into checkpoints

Steps, in this order, all fitted on the raw scene:
1. Drop bands that are mostly non-finite (fewer than half of their pixels finite, which includes
   all-NaN bands) and bands that are constant within float32 precision (max - min <= 1e-7 * max|v|).
   Which bands were dropped and why is in `info`.
2. Repair the remaining non-finite values (isolated dead pixels) with their band's median over
   finite values. The median is taken over a regular subsample of at most 32,768 pixels (exact for
   smaller scenes; a band with no finite value in that sample uses its mid-range). The number of
   values repaired is `info["repaired_values"]`; `transform` repairs new non-finite values the same way.
   `fit` logs a WARNING with the counts of repaired values and dropped non-finite bands.
3. Resample to `num_bands` bands by linear interpolation, over wavelength when the wavelengths are
   known, else over the original band index (dropped bands leave a gap, not a shift). The target grid
   spans the first to the last kept band evenly; both ends are kept bands.
4. Normalise (see `normalize_cube` for the choice of statistics).

`fit` reads the cube in row chunks (about 64 MiB each), twice, so a memmapped scene is never loaded
whole; the statistics of step 4 are those of the resampled values.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from data.blocks import read_block, rows_per_chunk
from utils.errors import CheckpointError, ConfigError, DataError
from utils.logging import get_logger

METHODS = ("minmax", "zscore")
MEDIAN_SAMPLE = 32768


def iter_row_chunks(cube: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(first_row, block (h, W, B) float64)` of about data.blocks.ROW_BUDGET values over a (possibly memmapped) cube."""
    height, width, bands = cube.shape
    rows = rows_per_chunk(width, bands)
    for r0 in range(0, height, rows):
        yield r0, read_block(cube, slice(r0, r0 + rows), np.float64)


def resample_matrix(src_x: np.ndarray, num_bands: int) -> np.ndarray:
    """(B_src, num_bands) linear-interpolation weights from strictly increasing `src_x` onto an even grid."""
    src_x = np.asarray(src_x, dtype=np.float64)
    if src_x.ndim != 1 or src_x.size < 2 or not (np.diff(src_x) > 0).all():
        raise DataError(f"band positions must be at least 2 distinct increasing values, got {src_x.size}")
    target = np.linspace(src_x[0], src_x[-1], num_bands)
    left = np.clip(np.searchsorted(src_x, target, side="right") - 1, 0, src_x.size - 2)  # (num_bands,)
    weight = (target - src_x[left]) / (src_x[left + 1] - src_x[left])
    matrix = np.zeros((src_x.size, num_bands))
    cols = np.arange(num_bands)
    matrix[left, cols] = 1.0 - weight
    matrix[left + 1, cols] += weight
    return matrix


def resample_bands(cube: np.ndarray, num_bands: int, wavelengths: np.ndarray | None = None) -> np.ndarray:
    """(..., B) -> (..., num_bands) float32, linear over wavelength (else band index); values must be finite."""
    _check_num_bands(num_bands)
    cube = np.asarray(cube, dtype=np.float64)
    x = np.arange(cube.shape[-1], dtype=np.float64) if wavelengths is None else np.asarray(wavelengths, np.float64)
    if x.shape != (cube.shape[-1],):
        raise DataError(f"{x.size} wavelengths for a cube with {cube.shape[-1]} bands")
    order = np.argsort(x, kind="stable")
    return (cube[..., order] @ resample_matrix(x[order], num_bands)).astype(np.float32)


class _NormStats:
    """Streaming statistics for normalisation: global min/max and per-band mean/variance (Chan et al.)."""

    def __init__(self, bands: int):
        self.lo, self.hi = np.inf, -np.inf
        self.n = 0
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)

    def update(self, flat: np.ndarray) -> None:  # flat (n, B) float64, finite
        if flat.shape[0] == 0:
            return
        self.lo, self.hi = min(self.lo, float(flat.min())), max(self.hi, float(flat.max()))
        n_b = flat.shape[0]
        mean_b = flat.mean(axis=0)
        m2_b = ((flat - mean_b) ** 2).sum(axis=0)
        total = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / total)
        self.n = total

    def params(self, method: str) -> dict[str, Any]:
        if method == "minmax":
            if not self.hi > self.lo:
                raise DataError("the cube is constant: min-max normalisation is undefined")
            return {"lo": self.lo, "hi": self.hi}
        std = np.sqrt(self.m2 / max(self.n, 1))
        if not std.max() > 0:
            raise DataError("the cube is constant: z-score normalisation is undefined")
        # A resampled band can be (nearly) constant even when its neighbours are not; such bands are
        # centred, and scaled as if their spread were 1e-6 of the widest band's.
        std = np.maximum(std, 1e-6 * std.max())
        return {"mean": self.mean.tolist(), "std": std.tolist()}


def _apply_norm(flat: np.ndarray, method: str, params: dict[str, Any]) -> np.ndarray:
    if method == "minmax":
        return (flat - params["lo"]) / (params["hi"] - params["lo"])
    return (flat - np.asarray(params["mean"])) / np.asarray(params["std"])


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"normalize method '{method}' is unknown; use one of {', '.join(METHODS)}")


def _check_num_bands(num_bands: int) -> None:
    if not isinstance(num_bands, (int, np.integer)) or num_bands < 2:
        raise ConfigError(f"num_bands must be an integer >= 2, got {num_bands!r}")


def normalize_cube(cube: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Normalise a finite in-memory cube (..., B); returns float32 of the same shape.

    - 'minmax' (default) is GLOBAL: one min and one max over all bands, so values land in [0, 1] and
      the shape of every spectrum (band-to-band ratios of differences) is kept. The spectral tokenizer
      codes that shape; per-band min-max would flatten absorption features and amplify noisy bands.
    - 'zscore' is PER BAND (mean 0, std 1 in every band): the option for scenes whose bands differ
      widely in scale (e.g. uncalibrated DN); spectral shape is not kept.
    """
    _check_method(method)
    cube = np.asarray(cube, dtype=np.float64)
    if not np.isfinite(cube).all():
        raise DataError("normalize_cube needs finite values; repair them first (prepare_cube / SpectralPreprocessor)")
    flat = cube.reshape(-1, cube.shape[-1])  # (H*W, B)
    stats = _NormStats(flat.shape[1])
    stats.update(flat)
    return _apply_norm(flat, method, stats.params(method)).reshape(cube.shape).astype(np.float32)


def _warn_repairs(info: dict[str, Any], source: str) -> None:
    """One WARNING line when non-finite values were repaired or bands dropped for them (info: `fit`'s)."""
    repaired, dropped = info["repaired_values"], info["dropped_nonfinite"]
    if not repaired and not dropped:
        return
    parts = [f"repaired {repaired} non-finite (NaN/inf) value(s) with their band's median"] if repaired else []
    if dropped:
        parts.append(f"dropped {len(dropped)} mostly non-finite band(s) {dropped}")
    get_logger().warning(f"{source}: {'; '.join(parts)}")


class SpectralPreprocessor:
    """Fitted drop / repair / resample / normalise pipeline (module doc); build with `fit` or `from_state`."""

    def __init__(self, raw_bands: int, num_bands: int, method: str, keep: list[int], fill: list[float],
                 src_x: list[float], norm: dict[str, Any], info: dict[str, Any]):
        self.raw_bands = raw_bands
        self.num_bands = num_bands
        self.method = method
        self.keep = np.asarray(keep, dtype=np.int64)  # (B_kept,) raw band indices, in wavelength order
        self.fill = np.asarray(fill, dtype=np.float64)  # (B_kept,) repair value per kept band
        self.src_x = np.asarray(src_x, dtype=np.float64)  # (B_kept,) wavelength or band index
        self.norm = norm
        self.info = info
        self.matrix = resample_matrix(self.src_x, num_bands)  # (B_kept, num_bands)

    @classmethod
    def fit(cls, cube: np.ndarray, num_bands: int, method: str = "minmax",
            wavelengths: np.ndarray | None = None, source: str | None = None,
            valid: np.ndarray | None = None) -> "SpectralPreprocessor":
        """Fit on a (H, W, B_raw) cube (ndarray or memmap), reading it in row chunks; `valid` (H, W) bool: the
        pixels that hold data (None = all): no statistic reads the others.

        `source` (the scene's file) prefixes every DataError and the repair warning, so the user learns which
        scene is unusable or was repaired.
        """
        try:
            prep = cls._fit(cube, num_bands, method, wavelengths, valid)
        except DataError as err:
            if source is None:
                raise
            raise DataError(f"{source}: {err}") from None
        _warn_repairs(prep.info, source or "the scene")
        return prep

    @classmethod
    def _fit(cls, cube: np.ndarray, num_bands: int, method: str, wavelengths: np.ndarray | None,
             valid: np.ndarray | None) -> "SpectralPreprocessor":
        _check_num_bands(num_bands)
        _check_method(method)
        if cube.ndim != 3:
            raise DataError(f"the cube must be 3-D (H, W, B), got shape {cube.shape}")
        height, width, raw = cube.shape
        if valid is not None and np.shape(valid) != (height, width):
            raise DataError(f"a no-data mask of shape {np.shape(valid)} for a cube of {height} x {width} pixels")
        pixels = height * width if valid is None else int(np.count_nonzero(valid))
        if pixels == 0:
            raise DataError("every pixel is marked no-data")
        if wavelengths is not None and np.shape(wavelengths) != (raw,):
            raise DataError(f"{np.size(wavelengths)} wavelengths for a cube with {raw} bands")

        def data_pixels(r0: int, block: np.ndarray) -> np.ndarray:  # (n, B_raw): the chunk's pixels that hold data
            flat = block.reshape(-1, raw)
            return flat if valid is None else flat[np.asarray(valid[r0:r0 + block.shape[0]]).ravel()]

        # Pass 1: per-band finite count, min, max, and a regular pixel subsample for the medians.
        count = np.zeros(raw, dtype=np.int64)
        lo, hi = np.full(raw, np.inf), np.full(raw, -np.inf)
        step = -(-pixels // MEDIAN_SAMPLE)  # ceil
        sample, seen = [], 0
        for r0, block in iter_row_chunks(cube):
            flat = data_pixels(r0, block)  # (n, B)
            finite = np.isfinite(flat)
            count += finite.sum(axis=0)
            lo = np.minimum(lo, np.where(finite, flat, np.inf).min(axis=0, initial=np.inf))
            hi = np.maximum(hi, np.where(finite, flat, -np.inf).max(axis=0, initial=-np.inf))
            index = np.arange(seen, seen + flat.shape[0])
            seen += flat.shape[0]
            sample.append(np.where(finite, flat, np.nan)[index % step == 0].astype(np.float32))
        mostly_bad = count * 2 < pixels
        span = np.maximum(np.abs(lo), np.abs(hi))
        constant = ~mostly_bad & (hi - lo <= 1e-7 * span)
        keep = np.flatnonzero(~mostly_bad & ~constant)
        if keep.size < 2:
            why = " (a single pixel: every band is constant)" if pixels == 1 else ""
            raise DataError(f"only {keep.size} usable band(s) of {raw} after dropping {int(mostly_bad.sum())} "
                            f"mostly non-finite and {int(constant.sum())} constant band(s){why}; need at least 2")
        if wavelengths is None:
            x_all, over = np.arange(raw, dtype=np.float64), "band index"
        else:
            x_all, over = np.asarray(wavelengths, dtype=np.float64), "wavelength"
            keep = keep[np.argsort(x_all[keep], kind="stable")]
            if not (np.diff(x_all[keep]) > 0).all():
                raise DataError("two kept bands share a wavelength; drop or average the duplicate bands first")
        with np.errstate(all="ignore"):
            median = np.nanmedian(np.concatenate(sample)[:, keep], axis=0) if sample else np.full(keep.size, np.nan)
        fill = np.where(np.isfinite(median), median, (lo[keep] + hi[keep]) / 2)
        info = {
            "raw_bands": int(raw),
            "kept_bands": int(keep.size),
            "dropped_nonfinite": np.flatnonzero(mostly_bad).tolist(),
            "dropped_constant": np.flatnonzero(constant).tolist(),
            "repaired_values": int((pixels - count[keep]).sum()),
            "resampled_over": over,
            "nodata_pixels": int(height * width - pixels),
        }
        prep = cls(raw, num_bands, method, keep.tolist(), fill.tolist(), x_all[keep].tolist(), {}, info)

        # Pass 2: normalisation statistics of the repaired, resampled values.
        stats = _NormStats(num_bands)
        for r0, block in iter_row_chunks(cube):
            stats.update(prep._resampled(data_pixels(r0, block)))
        prep.norm = stats.params(method)
        return prep

    def _resampled(self, flat: np.ndarray) -> np.ndarray:
        """(n, B_raw) -> (n, num_bands) float64: kept bands, repaired, resampled."""
        kept = np.asarray(flat, dtype=np.float64)[:, self.keep]  # (n, B_kept)
        kept = np.where(np.isfinite(kept), kept, self.fill)
        return kept @ self.matrix

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(..., B_raw) -> (..., num_bands) float32."""
        x = np.asarray(x)
        if x.shape[-1:] != (self.raw_bands,):
            raise DataError(f"the preprocessor was fitted on {self.raw_bands} bands; this data has "
                            f"{x.shape[-1] if x.ndim else 0} (shape {x.shape})")
        flat = x.reshape(-1, self.raw_bands)  # (n, B_raw)
        out = _apply_norm(self._resampled(flat), self.method, self.norm)
        return out.astype(np.float32).reshape(*x.shape[:-1], self.num_bands)

    def state(self) -> dict[str, Any]:
        """Plain types only (ints, floats, strings, lists, dicts): safe for weights_only checkpoints."""
        return {
            "raw_bands": self.raw_bands,
            "num_bands": self.num_bands,
            "method": self.method,
            "keep": self.keep.tolist(),
            "fill": self.fill.tolist(),
            "src_x": self.src_x.tolist(),
            "norm": dict(self.norm),
            "info": dict(self.info),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SpectralPreprocessor":
        required = ("raw_bands", "num_bands", "method", "keep", "fill", "src_x", "norm", "info")
        missing = [k for k in required if k not in state]
        if missing:
            raise CheckpointError(f"preprocessor state lacks {', '.join(missing)}: "
                                  f"not written by SpectralPreprocessor.state()")
        return cls(**{k: state[k] for k in required})


def prepare_cube(cube: np.ndarray, num_bands: int, method: str = "minmax",
                 wavelengths: np.ndarray | None = None, source: str | None = None,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """Fit a SpectralPreprocessor on `cube` (on its `valid` (H, W) pixels when given; the others must read as NaN,
    as the product readers leave them) and apply it chunk by chunk: (H, W, num_bands) float32."""
    prep = SpectralPreprocessor.fit(cube, num_bands, method, wavelengths, source=source, valid=valid)
    out = np.empty((*cube.shape[:2], num_bands), dtype=np.float32)
    for r0, block in iter_row_chunks(cube):
        out[r0:r0 + block.shape[0]] = prep.transform(block)
    return out


def mean_spectrum(cube: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """Mean spectrum (B,) float64 over every pixel of `cube` (H, W, B) (the `valid` (H, W) ones when given), or of
    `transform(rows)` (a fitted `SpectralPreprocessor.transform`) when given; read in row chunks, so a memmapped cube
    is never loaded whole. Stage 2 records it per pre-training scene and Stage 3 matches it (`domain_id: auto`,
    anomaly/domain.py)."""
    total, count = None, 0
    for r0, block in iter_row_chunks(cube):
        rows = np.asarray(block if transform is None else transform(block), dtype=np.float64)
        flat = rows.reshape(-1, rows.shape[-1])  # (r*W, B)
        if valid is not None:
            flat = flat[np.asarray(valid[r0:r0 + rows.shape[0]]).ravel()]
        total = flat.sum(axis=0) if total is None else total + flat.sum(axis=0)
        count += flat.shape[0]
    if not count:
        raise DataError("mean_spectrum: the cube has no pixels")
    return total / count  # (B,)
