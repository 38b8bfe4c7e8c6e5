"""Classical label-free anomaly detectors, the benchmark's baselines (and cheap fusion heads).

    global_rx(cube, n_components=0)                  # Reed-Xiaoli against the scene mean and covariance (0: all bands)
    local_rx(cube, inner=7, outer=21, n_components=30)   # dual-window RX on the leading principal components
    crd(cube, inner=3, outer=11, lam=1e-6)           # collaborative representation detector (Li & Du 2015)

Every detector takes a cube (H, W, B) (ndarray or read-only memmap) and returns an (H, W) float32 map,
higher = more anomalous. None reads a gt mask.

Singular covariances: global RX inverts the covariance with `numpy.linalg.pinv` (what `spectral`'s
GaussianStats.inv_cov does), so constant or collinear bands do not break it; local RX adds a ridge of
`ridge * trace(C) / d` to each local covariance before the solve (windows clipped at the border hold
fewer pixels); CRD adds `jitter * trace(X X^T) / s` to its Tikhonov term lam * diag(||y - x_i||^2), which
alone is singular when two window pixels equal the tested one (ABU airport-1 holds 1573 duplicated spectra).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import spectral
import torch

from data.blocks import read_block, rows_per_chunk
from utils.errors import ConfigError, DataError


def _check_cube(cube: np.ndarray) -> None:
    if getattr(cube, "ndim", None) != 3:
        raise DataError(f"expected a cube of shape (H, W, B), got shape {getattr(cube, 'shape', None)}")
    if min(cube.shape) < 1:
        raise DataError(f"cube of shape {cube.shape} is empty")


def _check_windows(inner: int, outer: int) -> None:
    for name, size in (("inner", inner), ("outer", outer)):
        if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
            raise ConfigError(f"{name} window must be a positive odd integer, got {size!r}")
    if inner >= outer:
        raise ConfigError(f"inner window ({inner}) must be smaller than the outer window ({outer})")


def scene_stats(cube: np.ndarray, chunk_rows: int | None = None, valid: np.ndarray | None = None
                ) -> spectral.GaussianStats:
    """Mean (B,) and unbiased covariance (B, B) of all pixels (of the `valid` (H, W) ones when given), accumulated in
    float64 over row chunks.

    Sums are taken around the first row's mean (a shifted accumulation), so raw radiances of 1e4 do not
    lose digits to cancellation. The cube is never copied whole: a memmap is read chunk by chunk.
    """
    _check_cube(cube)
    height, width, bands = cube.shape
    rows = chunk_rows or rows_per_chunk(width, bands)

    def pixels(r0: int, r1: int) -> np.ndarray:  # (P, B) float64: the rows' pixels that hold data
        x = read_block(cube, slice(r0, r1), np.float64).reshape(-1, bands)
        return x if valid is None else x[np.asarray(valid[r0:r1]).ravel()]

    first = pixels(0, 1) if valid is None else next(x for r0 in range(height) if len(x := pixels(r0, r0 + 1)))
    shift = first.mean(axis=0)  # (B,)
    total = np.zeros(bands)
    outer = np.zeros((bands, bands))
    for r0 in range(0, height, rows):
        x = pixels(r0, r0 + rows) - shift  # (P, B)
        if not np.all(np.isfinite(x)):
            raise DataError(f"cube rows {r0}..{min(height, r0 + rows) - 1} hold non-finite values; "
                            f"clean the scene (drop or interpolate NaN/inf bands) before scoring")
        total += x.sum(axis=0)
        outer += x.T @ x
    count = height * width if valid is None else int(np.count_nonzero(valid))
    if count < 2:
        raise DataError("a covariance needs at least 2 pixels")
    mean = total / count  # (B,) around the shift
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    return spectral.GaussianStats(mean=mean + shift, cov=cov, nsamples=count)


def global_rx(cube: np.ndarray, chunk_rows: int | None = None, n_components: int = 0) -> np.ndarray:
    """Squared Mahalanobis distance of every pixel to the scene mean under the scene covariance.

    cube (H, W, B) -> (H, W) float32. Statistics are accumulated in row chunks (`scene_stats`), then each
    chunk is scored against them, so peak memory is one chunk plus a (B, B) matrix. `n_components` 0 is the
    classical RX on every band (the pseudo-inverse); d > 0 is RX on the d leading principal components
    (`truncated_precision`).
    """
    return scene_rx(cube, grx_components=n_components, chunk_rows=chunk_rows)["grx"]


def scene_rx(cube: np.ndarray, grx_components: int | None = None, lrx_components: int | None = None,
             chunk_rows: int | None = None, z_dtype: type = np.float64, valid: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
    """Global RX ("grx", on `grx_components` leading axes, 0 = every band) and / or the cube projected on its
    `lrx_components` leading principal axes ("z", (H, W, d) of `z_dtype`), from ONE pass of scene statistics and
    one pass of scoring over row chunks; None skips that output. The cube (H, W, B) may be any row-sliceable
    view (a memmap, or Stage 3's prepared view of a raw cube); `valid` (H, W): the pixels the statistics read.

    A scene that fits in one chunk is read once for both passes (a prepared view is prepared once), and the
    covariance's eigendecomposition is shared by the principal axes and grx's truncated precision."""
    _check_cube(cube)
    height, width, bands = cube.shape
    rows = chunk_rows or rows_per_chunk(width, bands)
    if rows >= height:
        cube = read_block(cube, slice(0, height), np.float64)  # (H, W, B); slicing it below copies nothing
    stats = scene_stats(cube, rows, valid)
    eigen = _eigen_descending(stats.cov) if lrx_components is not None else None
    precision = truncated_precision(stats.cov, grx_components, eigen=eigen) if grx_components is not None else None
    axes = principal_axes(stats, lrx_components, eigen) if eigen is not None else None  # (B, d)
    out = {}
    if precision is not None:
        out["grx"] = np.empty((height, width), dtype=np.float32)
    if axes is not None:
        out["z"] = np.empty((height, width, axes.shape[1]), dtype=z_dtype)
    for r0 in range(0, height, rows):
        chunk = read_block(cube, slice(r0, r0 + rows), np.float64)  # (r, W, B)
        if precision is not None:
            out["grx"][r0:r0 + rows] = mahalanobis(chunk, stats.mean, precision)
        if axes is not None:
            out["z"][r0:r0 + rows] = (chunk - stats.mean) @ axes  # (r, W, d)
    return out


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(x - mean)^T P (x - mean) over the last axis: x (..., B), mean (B,), P (B, B) -> (...)."""
    centred = x - mean
    return np.einsum("...i,...i->...", centred @ precision, centred)


def _eigen_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (B,) and eigenvectors (B, B) of a covariance (B, B), largest eigenvalue first."""
    vals, vecs = np.linalg.eigh(cov)  # ascending
    return vals[::-1], vecs[:, ::-1]


def principal_axes(stats: spectral.GaussianStats, n_components: int,
                   eigen: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The covariance's leading `n_components` eigenvectors (B, d), largest eigenvalue first. `eigen`: the
    covariance's `_eigen_descending`, when already computed."""
    bands = stats.cov.shape[0]
    if not 1 <= n_components <= bands:
        raise ConfigError(f"n_components must be in 1..{bands} (the cube's band count), got {n_components}")
    return (eigen or _eigen_descending(stats.cov))[1][:, :n_components]


def truncated_precision(cov: np.ndarray, n_components: int, ridge: float = 0.0,
                        eigen: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(B, B) inverse of a covariance (B, B) on its leading `n_components` principal axes, zero on the rest:
    V_d diag(1 / (lambda_d + r)) V_d^T with r = `ridge` * mean variance. `n_components` 0 (or >= B) keeps
    every axis: the pseudo-inverse (pinv's cut-off drops the directions of zero variance).

    RX against this precision is RX on the d leading principal components: the trailing components carry
    mostly noise, which the full inverse amplifies by 1 / lambda (synthetic scenes 0-3: global RX 0.96 mean
    AUC on every band, 0.98 on 30 components). `eigen`: the covariance's `_eigen_descending`, when already
    computed."""
    if n_components < 0:
        raise ConfigError(f"n_components must be >= 0 (0 = every band), got {n_components}")
    bands = cov.shape[0]
    r = ridge * float(np.trace(cov)) / bands
    if n_components == 0 or n_components >= bands:
        return np.linalg.pinv(cov + r * np.eye(bands), hermitian=True)
    vals, vecs = eigen or _eigen_descending(cov)
    vals, vecs = vals[:n_components], vecs[:, :n_components]  # (d,), (B, d)
    keep = vals > max(float(vals[0]), 0.0) * bands * np.finfo(cov.dtype).eps  # pinv's cut-off
    vals, vecs = vals[keep], vecs[:, keep]
    return (vecs / (vals + r)) @ vecs.T


def principal_components(cube: np.ndarray, n_components: int, chunk_rows: int | None = None) -> np.ndarray:
    """Project every pixel on the scene's leading `n_components` principal axes: (H, W, d) float64."""
    return scene_rx(cube, lrx_components=n_components, chunk_rows=chunk_rows)["z"]


def _clipped_length(length: int, size: int) -> np.ndarray:
    """(length,) how many of the `size` positions centred on each index lie inside 0..length-1."""
    centres = np.arange(length)
    return np.minimum(centres + size // 2 + 1, length) - np.maximum(centres - size // 2, 0)


def _bordered_index(d: int) -> np.ndarray:
    """(d + 1, d + 1) places, in a pixel's row [packed covariance (K), diff (d), t], of the entries of the symmetric
    bordered matrix [[cov, diff], [diff^T, t]] (`_quadratic_form`); the covariance is packed in np.triu_indices
    order."""
    i, j = np.minimum.outer(np.arange(d), np.arange(d)), np.maximum.outer(np.arange(d), np.arange(d))
    packed = d * (d + 1) // 2
    index = np.empty((d + 1, d + 1), dtype=np.int64)
    index[:d, :d] = i * d - i * (i - 1) // 2 + j - i  # the pairs before row i, then j's place in row i
    index[d, :d] = index[:d, d] = packed + np.arange(d)
    index[d, d] = packed + d
    return index


def _moment_integral(z: np.ndarray, valid: np.ndarray | None, rows: tuple[int, int], cols: tuple[int, int],
                     halo: int, pairs: np.ndarray) -> np.ndarray:
    """Integral image (r1 - r0 + 2 halo + 1, c1 - c0 + 2 halo + 1, C), with a leading zero row and column, of the
    moments of z (H, W, d) over a tile's rows and columns [start, stop) (`rows`, `cols`) and `halo` more on each
    side: z, the products z_i z_j of the `pairs` (2, K) and, with `valid` (H, W), the count of pixels with data;
    zero outside the image and at no-data pixels.

    The same additions in the same order as np.cumsum down the rows, then along the columns, over the image's pixels
    only (the zero margins stay zero above and left and are copies below and right: 45% of the work on a 100 x 100
    scene with 21-pixel windows). Each row's moments are summed into the running sum while they are in the cache."""
    height, width, d = z.shape
    (r0, r1), (c0, c1) = rows, cols
    integral = np.zeros((r1 - r0 + 2 * halo + 1, c1 - c0 + 2 * halo + 1, d + pairs.shape[1] + (valid is not None)))
    lo, hi, first, last = max(0, r0 - halo), min(height, r1 + halo), max(0, c0 - halo), min(width, c1 + halo)
    top, left = 1 + lo - (r0 - halo), 1 + first - (c0 - halo)  # where the image's rows lo.. and columns first.. land
    bottom, right = top + hi - lo, left + last - first
    for row in range(top, bottom):
        moments = integral[row, left:right]  # (w, C)
        moments[:, :d] = z[lo + row - top, first:last]
        if valid is not None:  # no-data pixels add nothing to a window's sums
            moments[:, -1] = valid[lo + row - top, first:last]
            moments[:, :d] *= moments[:, -1:]
        values = moments[:, :d]  # (w, d)
        products = moments[:, d:d + pairs.shape[1]]  # (w, K)
        np.multiply(np.take(values, pairs[0], axis=1), np.take(values, pairs[1], axis=1), out=products)
        if row > top:
            moments += integral[row - 1, left:right]
    integral[bottom:, left:right] = integral[bottom - 1, left:right]
    for col in range(left + 1, right):  # column by column: np.cumsum over an axis is 3-4x slower than these adds
        np.add(integral[top:, col - 1], integral[top:, col], out=integral[top:, col])
    integral[top:, right:] = integral[top:, right - 1:right]
    return integral


def _window_sum(integral: np.ndarray, offset: int, size: int, rows: tuple[int, int], cols: tuple[int, int],
                out: np.ndarray) -> np.ndarray:
    """Sums (r, c, C), written to `out`, over the `size` x `size` windows whose top-left corners start `offset`
    pixels into an integral image (h+1, w+1, C) with a leading zero row and column, for the window rows and columns
    [start, stop): four slices, no gather, no temporary."""
    r0, r1, c0, c1 = rows[0] + offset, rows[1] + offset, cols[0] + offset, cols[1] + offset
    np.subtract(integral[r0 + size:r1 + size, c0 + size:c1 + size], integral[r0:r1, c0 + size:c1 + size], out=out)
    out -= integral[r0 + size:r1 + size, c0:c1]
    out += integral[r0:r1, c0:c1]
    return out


def _ring_sums(integral: np.ndarray, inner: int, outer: int, rows: tuple[int, int], cols: tuple[int, int]
               ) -> np.ndarray:
    """Sums (r, c, C) over the background rings (`outer` window minus `inner` window) of a tile's rows and columns
    [start, stop) (counted from the tile's first), from its integral image (`_moment_integral`)."""
    shape = (rows[1] - rows[0], cols[1] - cols[0], integral.shape[-1])
    sums = _window_sum(integral, 0, outer, rows, cols, np.empty(shape))
    sums -= _window_sum(integral, outer // 2 - inner // 2, inner, rows, cols, np.empty(shape))
    return sums


def _quadratic_form(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """diff^T cov^-1 diff (P,) from each pixel's row (P, K + d + 1): packed covariance, diff, and a slot that t is
    written to.

    One batched Cholesky of the bordered matrices [[cov, diff], [diff^T, t]] gathered by `index`
    (`_bordered_index`), and no triangular solve: with cov = L L^T their factor's last row is (L^-1 diff,
    sqrt(t - |L^-1 diff|^2)), so the score is the sum of squares of that row's first d entries, whatever t is;
    t = the largest float keeps the last pivot positive. Half the work of numpy's LU solve. A block where rounding
    left a covariance not positive definite (the ridge is relative) is solved by LU, which needs it non-singular
    only."""
    d = index.shape[0] - 1
    rows[:, -1] = np.finfo(np.float64).max
    bordered = np.take(rows, index, axis=-1)  # (P, d + 1, d + 1)
    try:
        half = np.linalg.cholesky(bordered)[:, d, :d]  # (P, d): L^-1 diff
    except np.linalg.LinAlgError:
        diff = bordered[:, d, :d]
        return np.einsum("pi,pi->p", diff, np.linalg.solve(bordered[:, :d, :d], diff[..., None])[..., 0])
    return np.einsum("pi,pi->p", half, half)


def _ring_rx(z: np.ndarray, sums: np.ndarray, count: np.ndarray, pairs: np.ndarray, index: np.ndarray,
             ridge: float, counted: bool) -> np.ndarray:
    """RX (P,) of pixels z (P, d) against their rings' sums (P, C) of `count` (P, 1) pixels each: mean, covariance
    plus `ridge` * trace / d, Mahalanobis distance. A ring without spread (or, when the sums `counted` the pixels
    with data, with fewer than 2 of them) has no covariance: no evidence, 0. `pairs` (2, K): the (i, j) of the
    products z_i z_j in the sums (np.triu_indices order); `index`: `_bordered_index`.

    The covariance stays packed (its K = d (d + 1) / 2 distinct entries, half the work) until `_quadratic_form`
    gathers each pixel's bordered matrix; each entry is (sum z_i z_j - (n m_i) m_j) / (n - 1), as a centring of the
    full d x d matrix computes it."""
    d, packed = z.shape[-1], pairs.shape[1]
    mean = sums[:, :d] / count  # (P, d)
    rows = np.empty((len(z), packed + d + 1))  # (P, K + d + 1): packed covariance, diff, t
    cov = rows[:, :packed]
    centring = np.take(count * mean, pairs[0], axis=1) * np.take(mean, pairs[1], axis=1)  # (P, K)
    np.subtract(sums[:, d:d + packed], centring, out=cov)
    cov /= count - 1
    diagonal = index[np.arange(d), np.arange(d)]  # (d,) the variances' places
    trace = cov[:, diagonal].sum(axis=1)  # (P,)
    cov[:, diagonal] += (ridge * trace / d)[:, None]
    np.subtract(z, mean, out=rows[:, packed:packed + d])
    scarce = (trace <= 0) | (sums[:, -1] < 2) if counted else trace <= 0  # (P,)
    rows[scarce, :packed + d] = np.concatenate([np.eye(d)[tuple(pairs)], np.zeros(d)])
    return _quadratic_form(rows, index)


def local_rx(cube: np.ndarray, inner: int = 7, outer: int = 21, n_components: int = 30,
             ridge: float = 1e-6, chunk_rows: int | None = None) -> np.ndarray:
    """Dual-window local RX on the first `n_components` principal components.

    Each pixel is scored against the mean and covariance of the pixels in its `outer` x `outer` window
    minus its `inner` x `inner` guard window (both centred on it and clipped at the image border).
    cube (H, W, B) -> (H, W) float32; the work is `local_rx_components` on the projected cube.
    """
    _check_windows(inner, outer)
    return local_rx_components(principal_components(cube, n_components, chunk_rows), inner, outer, ridge, chunk_rows)


INTEGRAL_BUDGET = 1 << 24  # float64 elements of one tile's integral image (128 MiB)
BLOCK_PIXELS = 1 << 7  # pixels solved together: their (P, d + 1, d + 1) systems (1 MiB at d = 30) stay in the cache


def _tile_shape(width: int, halo: int, channels: int, chunk_rows: int | None) -> tuple[int, int]:
    """(rows, columns) of the tiles local RX builds one integral image at a time for, each (rows + 2 halo + 1,
    columns + 2 halo + 1, `channels`) within INTEGRAL_BUDGET: the scene's whole width where the tile can be at least
    as tall as wide, else square, since the halo around a tile is integrated for each tile it borders (whole-width
    chunks of a 1024-wide scene were 11 rows tall: 3x the integration). `chunk_rows` fixes whole-width tiles."""
    pad = 2 * halo + 1
    area = INTEGRAL_BUDGET // channels  # pixels of one integral image
    cols = width if chunk_rows else min(width, max(1, math.isqrt(area) - pad))
    return chunk_rows or max(1, area // (cols + pad) - pad), cols


def _blocks(rows: tuple[int, int], cols: tuple[int, int]):
    """Blocks ((b0, b1), (k0, k1)) of about BLOCK_PIXELS pixels covering a tile's rows and columns [start, stop):
    whole tile rows where one fits, else parts of a row."""
    width = cols[1] - cols[0]
    step_rows, step_cols = max(1, BLOCK_PIXELS // width), min(width, BLOCK_PIXELS)
    for b0, k0 in itertools.product(range(rows[0], rows[1], step_rows), range(cols[0], cols[1], step_cols)):
        yield (b0, min(rows[1], b0 + step_rows)), (k0, min(cols[1], k0 + step_cols))


def local_rx_components(z: np.ndarray, inner: int = 7, outer: int = 21, ridge: float = 1e-6,
                        chunk_rows: int | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Dual-window local RX of an already projected cube z (H, W, d) -> (H, W) float32.

    Vectorised: the window sums of z and of the d(d+1)/2 distinct products z_i z_j come from one zero-padded
    integral image per tile (`_tile_shape`, `_moment_integral`; ring = outer sum minus inner sum, each four slices),
    then the covariances of BLOCK_PIXELS pixels at a time are assembled and solved by Cholesky (`_ring_rx`).
    Peak memory: one integral image (about 128 MiB), one block (a few MiB) and z. `chunk_rows`: whole-width tiles of
    that many rows. `valid` (H, W): the pixels a background window may hold (None = all); a window then counts its
    valid pixels only.
    """
    _check_windows(inner, outer)
    height, width, d = z.shape
    pairs, index = np.stack(np.triu_indices(d)), _bordered_index(d)  # (2, K): the distinct products z_i z_j, j >= i
    channels = d + pairs.shape[1] + (valid is not None)  # the last channel counts valid pixels
    tile_rows, tile_cols = _tile_shape(width, outer // 2, channels, chunk_rows)
    # pixel counts of the background windows clipped at the image border: outer box minus inner box
    counts = (np.outer(_clipped_length(height, outer), _clipped_length(width, outer))
              - np.outer(_clipped_length(height, inner), _clipped_length(width, inner)))[..., None]  # (H, W, 1)
    counts = counts.astype(np.float64)  # the arithmetic on them runs in float64: an int array would be cast each time
    if valid is None and counts.min() < 2:
        raise DataError(f"local RX: a background window holds {int(counts.min())} pixels; the image "
                        f"({height}x{width}) is too small for windows ({inner}, {outer})")
    out = np.empty((height, width), dtype=np.float32)
    for r0, c0 in itertools.product(range(0, height, tile_rows), range(0, width, tile_cols)):
        rows, cols = (r0, min(height, r0 + tile_rows)), (c0, min(width, c0 + tile_cols))
        integral = _moment_integral(z, valid, rows, cols, outer // 2, pairs)
        for (b0, b1), (k0, k1) in _blocks(rows, cols):
            sums = _ring_sums(integral, inner, outer, (b0 - r0, b1 - r0), (k0 - c0, k1 - c0))  # (r, c, C)
            sums = sums.reshape(-1, channels)  # (P, C)
            count = counts[b0:b1, k0:k1].reshape(-1, 1) if valid is None else np.maximum(sums[:, -1:], 2)  # (P, 1)
            scores = _ring_rx(z[b0:b1, k0:k1].reshape(-1, d), sums, count, pairs, index, ridge, valid is not None)
            out[b0:b1, k0:k1] = scores.reshape(b1 - b0, k1 - k0)
    return out


def crd(cube: np.ndarray, inner: int = 3, outer: int = 11, lam: float = 1e-6, jitter: float = 1e-9,
        batch_pixels: int = 512) -> np.ndarray:
    """Collaborative representation detector (W. Li, Q. Du, IEEE TGRS 2015), vectorised over pixels.

    Each pixel y (B,) is represented by the s = outer^2 - inner^2 pixels X (s, B) of its dual window:
    alpha = (X X^T + lam * diag(||y - x_i||^2))^-1 X y, and the score is the residual ||y - X^T alpha||.
    The cube is min-max scaled to [0, 1] as a whole first (so `lam` has one meaning across sensors).
    Windows are clipped at the border by zero padding: a zero column x_i = 0 gets alpha_i = 0 and adds
    nothing, so every system keeps size s and the whole scene is solved in batches. cube (H, W, B) -> (H, W).
    """
    _check_windows(inner, outer)
    _check_cube(cube)
    if lam <= 0:
        raise ConfigError(f"crd: lam must be > 0, got {lam}")
    height, width, bands = cube.shape
    halo = outer // 2
    x = np.asarray(cube, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError("crd: the cube holds non-finite values; clean the scene before scoring")
    low, high = x.min(), x.max()
    x = (x - low) / (high - low) if high > low else np.zeros_like(x)
    padded = torch.from_numpy(np.pad(x, ((halo, halo), (halo, halo), (0, 0)), mode="constant"))  # (H+2h, W+2h, B)
    dr, dc = np.meshgrid(np.arange(-halo, halo + 1), np.arange(-halo, halo + 1), indexing="ij")
    keep = (np.abs(dr) > inner // 2) | (np.abs(dc) > inner // 2)
    off_r = torch.from_numpy(dr[keep])  # (s,)
    off_c = torch.from_numpy(dc[keep])  # (s,)
    rr, cc = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rr, cc = torch.from_numpy(rr.ravel()), torch.from_numpy(cc.ravel())  # (P,)
    out = torch.empty(height * width, dtype=torch.float64)
    eye_s = torch.eye(off_r.numel(), dtype=torch.float64)
    for p0 in range(0, height * width, batch_pixels):
        pr, pc = rr[p0:p0 + batch_pixels] + halo, cc[p0:p0 + batch_pixels] + halo  # (n,)
        y = padded[pr, pc]  # (n, B)
        nb = padded[pr[:, None] + off_r, pc[:, None] + off_c]  # (n, s, B)
        gram = nb @ nb.transpose(1, 2)  # (n, s, s)
        dist2 = ((nb - y[:, None, :]) ** 2).sum(-1)  # (n, s)
        scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)[:, None, None]  # (n, 1, 1)
        system = gram + eye_s * (lam * dist2[:, None, :] + jitter * scale)  # (n, s, s): diagonal terms only
        rhs = (nb @ y[:, :, None])  # (n, s, 1)
        alpha = torch.linalg.solve(system, rhs)  # (n, s, 1)
        resid = y - (nb.transpose(1, 2) @ alpha)[..., 0]  # (n, B)
        out[p0:p0 + batch_pixels] = resid.norm(dim=-1)
    return out.reshape(height, width).numpy().astype(np.float32)
