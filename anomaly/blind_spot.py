"""Blind-spot scoring of a scene with the pre-trained encoder (the context heads).

Every pixel is scored while hidden: the scene is tiled with square cores of `block` tokens (`block * d`
pixels for d x d token cells), and the cores are scored in windows, tokenizer patches inside the image (no
mirrored pixels, which could show a hidden pixel its own copy): one core per window, or several
(anomaly/blind_spot_windows.py). The encoder sees neither the cores' tokens nor their spectra, nor the joint ids
of the guard rings around them (their spatial codes were computed from core pixels), nor, without `context_ids`,
any joint id; it predicts the cores from the rest.

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
per stripe of rows, not once per window that holds it; without `context_ids` only their spectra are gathered.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from anomaly.baselines import local_rx_components, truncated_precision
from anomaly.blind_spot_windows import BlindSpotWindows
from anomaly.head_registry import CONTEXT_HEADS, HEADS, RESIDUAL_HEADS
from anomaly.window_tokens import WindowTokenizer
from utils.errors import DataError

RESIDUAL_SAMPLE = 2048  # windows whose core residuals fit ctx_rx's mean and covariance
REFINE_PHASES = 2  # phases of the one-core-a-window scoring that re-scores the refined pixels
RIDGE = 1e-6  # relative ridge on the residual covariance before inversion


def score_batches(encoder, tokens: WindowTokenizer, windows: BlindSpotWindows, index: np.ndarray, domain_id: int,
                  heads: list[str], batch_size: int, device: torch.device, context_ids: bool, token_heads: bool
                  ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]]:
    """Yield (window indices (n,), {head: (n, T)} for the heads other than RESIDUAL_HEADS, plus "residual" (M, B) at
    the masked positions when one of those is wanted, core masks (n, T)) for the windows `index` (sorted), batch by
    batch. `context_ids` False: the encoder sees no joint id (a tokenizer that serves none gives mask ids);
    `token_heads`: whether lm_nll or lm_spectral is among `heads` (the MLM head runs)."""
    cell = tokens.tokenizer.patch_size // tokens.tokenizer.grid_size
    wanted = [name for name in heads if name not in RESIDUAL_HEADS]
    for local, ids, spectra in tokens.windows(windows.corners[index], batch_size):
        batch = index[local]  # (n,)
        mask = windows.core_masks(batch, cell).to(device)  # (n, T)
        if ids is None:
            ids = torch.full(mask.shape, encoder.mask_token_id, dtype=torch.long, device=device)  # (n, T)
        domains = torch.full((len(batch),), int(domain_id), dtype=torch.long, device=device)  # (n,)
        scores = encoder.masked_scores(ids, domains, mask, spectra if encoder.spectral_input_dim > 0 else None,
                                       token_heads=token_heads, context_ids=context_ids)
        out = {name: scores[name] for name in wanted}
        if set(RESIDUAL_HEADS) & set(heads):
            out["residual"] = scores["residual"]  # (M, B)
        yield batch, out, mask


def refined_windows(candidates: np.ndarray, windows: BlindSpotWindows) -> np.ndarray:
    """Indices (n,) of the windows whose core pixels include a `candidates` (H, W) pixel."""
    height, width = candidates.shape
    patch = windows.rows.shape[1]
    rows = np.clip(windows.corners[:, :1] + np.arange(patch), 0, height - 1)  # (N, S)
    cols = np.clip(windows.corners[:, 1:] + np.arange(patch), 0, width - 1)  # (N, S)
    hit = candidates[rows[:, :, None], cols[:, None, :]] & windows.core_pixels(np.arange(len(windows.corners)))
    return np.flatnonzero(hit.any(axis=(1, 2)))  # (N, S, S) -> (n,)


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
    corners, core = windows.corners[batch[window]], windows.core_pixels(batch[window])  # (M, 2), (M, S, S)
    for dr in range(cell):
        for dc in range(cell):
            local_r, local_c = (token // grid) * cell + dr, (token % grid) * cell + dc  # (M,) a pixel of each cell
            inside = core[np.arange(len(token)), local_r, local_c]  # only the core's own pixels (a cell may straddle it)
            z[corners[inside, 0] + local_r[inside], corners[inside, 1] + local_c[inside]] = values[inside]


def _paint(maps: dict[str, np.ndarray], windows: BlindSpotWindows, batch: np.ndarray,
           scores: dict[str, torch.Tensor], cell: int, grid: int) -> None:
    """Raise each map's core pixels of the windows `batch` (n,) to the windows' scores (n, T) where higher."""
    which, local_r, local_c = np.nonzero(windows.core_pixels(batch))  # (P,) each: the core pixels
    rows, cols = windows.corners[batch[which], 0] + local_r, windows.corners[batch[which], 1] + local_c  # (P,) each
    for name, values in scores.items():
        pixels = values.reshape(len(batch), 1, grid, grid)  # (n, 1, g, g)
        pixels = pixels.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[:, 0].cpu().numpy()  # (n, S, S)
        np.maximum.at(maps[name], (rows, cols), pixels[which, local_r, local_c])


@torch.no_grad()
def blind_spot_maps(encoder, tokenizer, cube, transform: Callable | None, domain_id: int, heads: list[str],
                    block: int, offsets: int, batch_size: int, device: torch.device,
                    local_rx: dict[str, int] | None = None, rx_components: int = 0,
                    valid: np.ndarray | None = None, *, layout: str, context_ids: bool,
                    refine_share: float) -> dict[str, np.ndarray]:
    """{head: (H, W) float32}: every pixel's score while hidden, the maximum over `offsets` phases of cores in
    windows laid out as `layout` (anomaly/blind_spot_windows.py); `context_ids` False shows an encoder that reads
    spectra the context's spectra alone, and no window is tokenised unless a token head needs its targets (an
    encoder pre-trained without spectra always sees the ids beyond the guard rings: they are all it reads).
    `refine_share` > 0: then the pixels in the top `refine_share` of any painted head's map are scored again one
    core a window at REFINE_PHASES phases, their score the maximum over every view.

    ctx_rx's residual mean and covariance (and ctx_lrx's principal axes) come from the cores of up to
    RESIDUAL_SAMPLE windows of phase 0, spread evenly over the scene; those windows are scored once, their other
    heads kept for the map. ctx_rx works on the residuals' `rx_components` leading axes (0 = all). ctx_lrx:
    dual-window local RX (`local_rx`: inner, outer, n_components) on the phase-0 residuals projected on those
    axes, an (H, W, d) cube (phase 0's cores cover every pixel). `valid` (H, W): the pixels that hold data;
    the residuals of cells touching the others enter no statistic, nor do those pixels enter ctx_lrx's windows."""
    unknown = sorted(set(heads) - set(CONTEXT_HEADS))
    if unknown:
        raise ValueError(f"not context heads: {unknown} (they are {CONTEXT_HEADS})")
    spectral = [name for name in heads if HEADS[name].needs_spectra]
    if spectral and encoder.spectral_input_dim == 0:
        raise ValueError(f"{', '.join(spectral)} need an encoder pre-trained with spectral_input: true")
    context_ids = context_ids or encoder.spectral_input_dim == 0  # an encoder that reads no spectra has ids only
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
    phases = [BlindSpotWindows.tile(layout, height, width, tokenizer.patch_size, block_px, (k * block_px) // offsets)
              for k in range(offsets)]
    token_heads = bool({"lm_nll", "lm_spectral"} & set(heads))
    tokens = WindowTokenizer(tokenizer, cube, transform, device, ids=token_heads or context_ids)

    def batches(windows, index):
        return score_batches(encoder, tokens, windows, index, domain_id, heads, batch_size, device, context_ids,
                             token_heads)

    def finish(windows, batch, scores, mask, phase):
        residual = scores.pop("residual", None)
        if "ctx_rx" in heads:
            scores["ctx_rx"] = residual_distance(residual, mask, whitener)
        if z is not None and phase == 0:
            _paint_components(z, windows, batch, residual, mask, projection, cell, grid)
        _paint(maps, windows, batch, scores, cell, grid)

    whitener = projection = None
    for k, windows in enumerate(phases):
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
    if refine_share > 0:
        candidates = np.zeros((height, width), dtype=bool)  # (H, W)
        for name in painted:
            scored = maps[name] if valid is None else maps[name][valid]
            candidates |= maps[name] >= np.quantile(scored, 1 - refine_share)
        if valid is not None:
            candidates &= valid
        for k in range(REFINE_PHASES):
            fine = BlindSpotWindows.tile("block", height, width, tokenizer.patch_size, block_px,
                                         (k * block_px) // REFINE_PHASES)
            for batch, scores, mask in batches(fine, refined_windows(candidates, fine)):
                finish(fine, batch, scores, mask, k + 1)  # phase > 0: ctx_lrx keeps the first pass's residuals
    if z is not None:
        maps["ctx_lrx"] = local_rx_components(z, **windows_rx, valid=valid)
    return {name: maps[name] for name in heads}
