"""Blind-spot scoring of a scene with the pre-trained encoder (the context heads).

Every pixel is scored while hidden: the scene is tiled with square core blocks of `block` tokens
(`block * d` pixels for d x d token cells), and each core is scored in its own window, a tokenizer patch
centred on it and shifted to lie inside the image (no mirrored pixels, which could show a hidden pixel
its own copy). The encoder sees neither the core's tokens nor its spectra, nor the joint ids of the guard
ring around it (their spatial codes were computed from core pixels); it predicts the core from the rest.

The tiling is repeated at `offsets` phases along the diagonal (0, block/offsets, ...), so an object that
straddles a core edge in one phase lies whole inside a core in another; a pixel's score is the maximum
over the phases (its most surprising hidden view).

Heads (each a per-pixel map, higher = more anomalous):
- lm_nll       -log p(joint id | context)
- lm_spectral  -log sum_m p(k + K_s m | context): the spectral code's marginal
- ctx_spec     mean squared error of the context-predicted spectrum (encoders that read spectra)
- ctx_lrx      dual-window local RX (local_rx's windows) on those residuals, projected on the leading principal
               axes of the sampled residuals: the residual judged against its neighbourhood, not the whole scene
- ctx_rx       Mahalanobis distance of that residual (pixel minus prediction) under the scene's residual
               mean and covariance, on the residuals' `rx_components` leading principal axes, fitted first on
               the cores of up to `RESIDUAL_SAMPLE` windows of phase 0, whose other heads are kept (each window
               is scored once; no (H, W, B) residual cube is kept)

The windows' tokens come from anomaly/window_tokens.py: each pixel is prepared and spectrally encoded once
per stripe of rows, not once per window that holds it.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from anomaly.baselines import local_rx_components, truncated_precision
from anomaly.head_registry import CONTEXT_HEADS, HEADS, RESIDUAL_HEADS
from anomaly.window_tokens import WindowTokenizer
from utils.errors import DataError

RESIDUAL_SAMPLE = 2048  # windows whose core residuals fit ctx_rx's mean and covariance
RIDGE = 1e-6  # relative ridge on the residual covariance before inversion


def core_starts(length: int, block: int, phase: int) -> np.ndarray:
    """Start pixels (n,) of the cores tiling [0, length) with `block`-pixel cores at `phase` (the first
    core is cut at the image edge when phase > 0)."""
    first = phase - block if phase > 0 else 0
    return np.arange(first, length, block, dtype=np.int64)


def window_starts(core: np.ndarray, block: int, patch: int, length: int) -> np.ndarray:
    """Window start (n,) of each core start (n,): the core centred in a `patch`-pixel window, shifted to lie
    inside [0, length); a scene shorter than the patch keeps the window centred (mirrored pixels then)."""
    centred = core + block // 2 - patch // 2
    if length < patch:
        return np.full_like(core, (length - patch) // 2)
    return np.clip(centred, 0, length - patch)


class BlindSpotWindows:
    """The windows of one phase: corners (N, 2) in the image, and each core's pixel box (N, 4) as
    (row0, row1, col0, col1), clipped to the image."""

    def __init__(self, height: int, width: int, patch: int, block_px: int, phase: int):
        rows, cols = core_starts(height, block_px, phase), core_starts(width, block_px, phase)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        r, c = r.ravel(), c.ravel()  # (N,)
        self.corners = np.stack([window_starts(r, block_px, patch, height),
                                 window_starts(c, block_px, patch, width)], axis=1)  # (N, 2)
        self.boxes = np.stack([np.maximum(r, 0), np.minimum(r + block_px, height),
                               np.maximum(c, 0), np.minimum(c + block_px, width)], axis=1)  # (N, 4)

    def core_masks(self, index: np.ndarray, patch: int, cell: int) -> torch.Tensor:
        """(n, T) bool over the token grids of the windows `index` (n,): the cells that hold core pixels."""
        g = patch // cell
        local = self.boxes[index] - np.repeat(self.corners[index], 2, axis=1)  # (n, 4) in the window
        edges = np.arange(g + 1) * cell  # (g+1,) cell borders
        lo, hi = edges[:-1], edges[1:]  # (g,)
        rows = (hi[None] > local[:, :1]) & (lo[None] < local[:, 1:2])  # (n, g)
        cols = (hi[None] > local[:, 2:3]) & (lo[None] < local[:, 3:4])  # (n, g)
        return torch.from_numpy((rows[:, :, None] & cols[:, None, :]).reshape(len(local), g * g))


def score_batches(encoder, tokens: WindowTokenizer, windows: BlindSpotWindows, index: np.ndarray, domain_id: int,
                  heads: list[str], batch_size: int, device: torch.device
                  ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]]:
    """Yield (window indices (n,), {head: (n, T)} for the heads other than RESIDUAL_HEADS, plus "residual" (M, B) at
    the masked positions when one of those is wanted, core masks (n, T)) for the windows `index` (sorted), batch by
    batch."""
    patch, cell = tokens.tokenizer.patch_size, tokens.tokenizer.patch_size // tokens.tokenizer.grid_size
    token_heads = bool({"lm_nll", "lm_spectral"} & set(heads))
    wanted = [name for name in heads if name not in RESIDUAL_HEADS]
    for local, ids, spectra in tokens.windows(windows.corners[index], batch_size):
        batch = index[local]  # (n,)
        mask = windows.core_masks(batch, patch, cell).to(device)  # (n, T)
        domains = torch.full((len(batch),), int(domain_id), dtype=torch.long, device=device)  # (n,)
        scores = encoder.masked_scores(ids, domains, mask, spectra if encoder.spectral_input_dim > 0 else None,
                                       token_heads=token_heads)
        out = {name: scores[name] for name in wanted}
        if set(RESIDUAL_HEADS) & set(heads):
            out["residual"] = scores["residual"]  # (M, B)
        yield batch, out, mask


def residual_distance(residual: torch.Tensor, mask: torch.Tensor, whitener: tuple[torch.Tensor, torch.Tensor]
                      ) -> torch.Tensor:
    """ctx_rx (n, T): the Mahalanobis distance of the residuals (M, B) at `mask` (n, T), 0 elsewhere."""
    mean, precision = whitener
    centred = residual - mean  # (M, B)
    out = residual.new_zeros(mask.shape)  # (n, T)
    out[mask] = ((centred @ precision) * centred).sum(dim=-1)
    return out


def residual_statistics(residuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (B,), covariance (B, B)) in float64 of residuals (M, B); the identity for a single residual."""
    residuals = residuals.double()
    mean = residuals.mean(dim=0)
    cov = torch.cov((residuals - mean).T) if len(residuals) > 1 else torch.eye(residuals.shape[1], dtype=torch.float64,
                                                                               device=residuals.device)
    return mean, cov


def fit_whitener(mean: torch.Tensor, cov: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (B,), precision (B, B)) float32 from `residual_statistics`, with a relative ridge: the inverse on the
    residuals' leading `n_components` principal axes (0 = every axis; anomaly.baselines.truncated_precision)."""
    precision = truncated_precision(cov.cpu().numpy(), n_components, RIDGE)
    return mean.float(), torch.from_numpy(precision).float().to(cov.device)


def residual_axes(cov: torch.Tensor, n_components: int) -> torch.Tensor:
    """The leading `n_components` principal axes (B, d) of a residual covariance (B, B), largest variance first."""
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    return vecs.flip(-1)[:, :n_components].float()


def _cells_with_data(valid: np.ndarray, windows: BlindSpotWindows, batch: np.ndarray, mask: torch.Tensor, cell: int,
                     grid: int) -> np.ndarray:
    """(M,) bool: whether every pixel of each masked cell of the windows `batch` holds data, in `mask.nonzero()`
    order (the order of the residuals)."""
    window, token = (t.cpu().numpy() for t in mask.nonzero(as_tuple=True))  # (M,) each
    corners = windows.corners[batch[window]]  # (M, 2)
    top, left = corners[:, 0] + (token // grid) * cell, corners[:, 1] + (token % grid) * cell  # (M,) each
    height, width = valid.shape
    keep = np.ones(len(token), dtype=bool)
    for dr in range(cell):
        for dc in range(cell):
            keep &= valid[np.clip(top + dr, 0, height - 1), np.clip(left + dc, 0, width - 1)]
    return keep


def _paint_components(z: np.ndarray, windows: BlindSpotWindows, batch: np.ndarray, residual: torch.Tensor,
                      mask: torch.Tensor, projection: tuple[torch.Tensor, torch.Tensor], cell: int, grid: int) -> None:
    """Write the projected residuals ((M, B) at `mask` (n, T), minus the mean, on the axes (B, d)) of the windows
    `batch` into z (H, W, d) at their core pixels."""
    mean, axes = projection
    values = ((residual - mean) @ axes).cpu().numpy()  # (M, d)
    window, token = (t.cpu().numpy() for t in mask.nonzero(as_tuple=True))  # (M,) each
    corners, boxes = windows.corners[batch[window]], windows.boxes[batch[window]]  # (M, 2), (M, 4)
    for dr in range(cell):
        for dc in range(cell):
            rows = corners[:, 0] + (token // grid) * cell + dr  # (M,) a pixel of each masked cell
            cols = corners[:, 1] + (token % grid) * cell + dc
            inside = (rows >= boxes[:, 0]) & (rows < boxes[:, 1]) & (cols >= boxes[:, 2]) & (cols < boxes[:, 3])
            z[rows[inside], cols[inside]] = values[inside]  # only the core's own pixels (a cell may straddle it)


def _paint(maps: dict[str, np.ndarray], windows: BlindSpotWindows, batch: np.ndarray,
           scores: dict[str, torch.Tensor], cell: int, grid: int) -> None:
    """Raise each map's core pixels of the windows `batch` (n,) to the windows' scores (n, T) where higher."""
    for name, values in scores.items():
        pixels = values.reshape(len(batch), 1, grid, grid)  # (n, 1, g, g)
        pixels = pixels.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[:, 0].cpu().numpy()  # (n, S, S)
        for i, w in enumerate(batch):
            r0, r1, c0, c1 = windows.boxes[w]
            wr, wc = windows.corners[w]
            region = pixels[i, r0 - wr:r1 - wr, c0 - wc:c1 - wc]
            np.maximum(maps[name][r0:r1, c0:c1], region, out=maps[name][r0:r1, c0:c1])


@torch.no_grad()
def blind_spot_maps(encoder, tokenizer, cube, transform: Callable | None, domain_id: int, heads: list[str],
                    block: int, offsets: int, batch_size: int, device: torch.device,
                    local_rx: dict[str, int] | None = None, rx_components: int = 0,
                    valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{head: (H, W) float32}: every pixel's score while hidden, the maximum over `offsets` phases.

    ctx_rx's residual mean and covariance (and ctx_lrx's principal axes) come from the cores of up to
    RESIDUAL_SAMPLE windows of phase 0, spread evenly over the scene; those windows are scored once, their other
    heads kept for the map. ctx_rx works on the residuals' `rx_components` leading axes (0 = all). ctx_lrx:
    dual-window local RX (`local_rx`: inner, outer, n_components) on the phase-0 residuals projected on those
    axes, an (H, W, d) cube (phase 0's cores cover every pixel once). `valid` (H, W): the pixels that hold data;
    the residuals of cells touching the others enter no statistic, nor do those pixels enter ctx_lrx's windows."""
    unknown = sorted(set(heads) - set(CONTEXT_HEADS))
    if unknown:
        raise ValueError(f"not context heads: {unknown} (they are {CONTEXT_HEADS})")
    spectral = [name for name in heads if HEADS[name].needs_spectra]
    if spectral and encoder.spectral_input_dim == 0:
        raise ValueError(f"{', '.join(spectral)} need an encoder pre-trained with spectral_input: true")
    height, width = cube.shape[:2]
    cell, grid = tokenizer.patch_size // tokenizer.grid_size, tokenizer.grid_size
    block_px = block * cell
    painted = [name for name in heads if name != "ctx_lrx"]
    maps = {name: np.full((height, width), -np.inf, dtype=np.float32) for name in painted}
    z = windows_rx = None
    if "ctx_lrx" in heads:
        if local_rx is None:
            raise ValueError("ctx_lrx needs the local_rx settings (inner, outer, n_components)")
        windows_rx = {key: value for key, value in local_rx.items() if key != "n_components"}
        d = min(int(local_rx["n_components"]), encoder.spectral_input_dim)
        z = np.zeros((height, width, d), dtype=np.float32)  # (H, W, d)
    tokens = WindowTokenizer(tokenizer, cube, transform, device)

    def batches(windows, index):
        return score_batches(encoder, tokens, windows, index, domain_id, heads, batch_size, device)

    def finish(windows, batch, scores, mask, phase):
        residual = scores.pop("residual", None)
        if "ctx_rx" in heads:
            scores["ctx_rx"] = residual_distance(residual, mask, whitener)
        if z is not None and phase == 0:
            _paint_components(z, windows, batch, residual, mask, projection, cell, grid)
        _paint(maps, windows, batch, scores, cell, grid)

    whitener = projection = None
    for k in range(offsets):
        windows = BlindSpotWindows(height, width, tokenizer.patch_size, block_px, (k * block_px) // offsets)
        rest = np.arange(len(windows.corners))
        if k == 0 and set(RESIDUAL_HEADS) & set(heads):
            picked = np.unique(np.linspace(0, len(rest) - 1, min(len(rest), RESIDUAL_SAMPLE)).round().astype(np.int64))
            sample = list(batches(windows, picked))
            residuals = [scores["residual"] for _, scores, _ in sample]  # (M, B) each
            if valid is not None:  # the residuals of cells touching no-data pixels enter no statistic
                keep = [torch.from_numpy(_cells_with_data(valid, windows, batch, mask, cell, grid)).to(r.device)
                        for (batch, _, mask), r in zip(sample, residuals)]
                residuals = [r[k] for r, k in zip(residuals, keep)]
                if not sum(len(r) for r in residuals):
                    raise DataError("no sampled blind-spot cell is free of no-data pixels: the residual statistics "
                                    "have nothing to fit")
            mean, cov = residual_statistics(torch.cat(residuals))  # of (M, B)
            whitener = fit_whitener(mean, cov, rx_components)
            projection = (whitener[0], residual_axes(cov, d)) if z is not None else None
            for batch, scores, mask in sample:
                finish(windows, batch, scores, mask, k)
            rest = np.setdiff1d(rest, picked)
        for batch, scores, mask in batches(windows, rest):
            finish(windows, batch, scores, mask, k)
    if z is not None:
        maps["ctx_lrx"] = local_rx_components(z, **windows_rx, valid=valid)
    return {name: maps[name] for name in heads}
