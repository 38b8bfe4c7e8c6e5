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
- ctx_rx       Mahalanobis distance of that residual (pixel minus prediction) under the scene's residual
               mean and covariance, fitted first on the cores of up to `RESIDUAL_SAMPLE` windows of phase 0
               (memory stays bounded by the batch: no (H, W, B) residual cube is kept)
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from data.datasets import HSIPatchExtractor
from encoder.hsi_bert_encoder import frozen_tokenize

CONTEXT_HEADS = ("lm_nll", "lm_spectral", "ctx_spec", "ctx_rx")
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


def window_scores(encoder, tokenizer, windows: BlindSpotWindows, index: np.ndarray, cube,
                  transform: Callable | None, domain_id: int, device: torch.device
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(encoder.masked_scores of the windows `index` (n,), their core masks (n, T))."""
    patch, cell = tokenizer.patch_size, tokenizer.patch_size // tokenizer.grid_size
    corners = windows.corners[index]  # (n, 2)
    patches = next(HSIPatchExtractor(patch, patch).iter_batches(cube, len(corners), transform, corners))[0]
    patches = torch.from_numpy(patches).to(device)  # (n, B, S, S)
    joint_ids = frozen_tokenize(tokenizer, patches)  # (n, T)
    spectra = tokenizer.spectral_vqvae.cells(patches) if encoder.spectral_input_dim > 0 else None  # (n, T, B)
    mask = windows.core_masks(index, patch, cell).to(device)  # (n, T)
    domains = torch.full((len(corners),), int(domain_id), dtype=torch.long, device=device)  # (n,)
    return encoder.masked_scores(joint_ids, domains, mask, spectra), mask


def residual_whitener(encoder, tokenizer, cube, transform: Callable | None, domain_id: int, block_px: int,
                      batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (B,), inverse covariance (B, B)) of the core residuals of up to RESIDUAL_SAMPLE windows of phase 0,
    spread evenly over the scene."""
    windows = BlindSpotWindows(*cube.shape[:2], tokenizer.patch_size, block_px, 0)
    count = len(windows.corners)
    picked = np.unique(np.linspace(0, count - 1, min(count, RESIDUAL_SAMPLE)).round().astype(np.int64))
    chunks = []
    for first in range(0, len(picked), batch_size):
        index = picked[first:first + batch_size]
        scores, mask = window_scores(encoder, tokenizer, windows, index, cube, transform, domain_id, device)
        chunks.append(scores["residual"][mask].double())  # (m, B)
    residuals = torch.cat(chunks)  # (M, B)
    mean = residuals.mean(dim=0)
    cov = torch.cov((residuals - mean).T) if len(residuals) > 1 else torch.eye(residuals.shape[1], dtype=torch.float64)
    ridge = RIDGE * float(torch.diagonal(cov).mean().clamp_min(1e-12))
    precision = torch.linalg.pinv(cov + ridge * torch.eye(len(cov), dtype=cov.dtype, device=cov.device))
    return mean.float(), precision.float()


def score_windows(encoder, tokenizer, windows: BlindSpotWindows, cube, transform: Callable | None,
                  domain_id: int, heads: list[str], batch_size: int, device: torch.device,
                  whitener: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield (first window index, {head: (n, S, S) pixel scores of those windows}) batch by batch."""
    cell, g = tokenizer.patch_size // tokenizer.grid_size, tokenizer.grid_size
    mean, precision = (t.to(device) for t in whitener) if "ctx_rx" in heads else (None, None)
    for first in range(0, len(windows.corners), batch_size):
        index = np.arange(first, min(first + batch_size, len(windows.corners)))
        scores, _ = window_scores(encoder, tokenizer, windows, index, cube, transform, domain_id, device)
        if "ctx_rx" in heads:
            centred = scores["residual"] - mean  # (n, T, B); not-masked positions are dropped below
            scores["ctx_rx"] = ((centred @ precision) * centred).sum(dim=-1)  # (n, T)
        out = {}
        for name in heads:
            grid = scores[name].reshape(len(index), 1, g, g)  # (n, 1, g, g)
            out[name] = grid.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[:, 0].cpu().numpy()  # (n, S, S)
        yield first, out


@torch.no_grad()
def blind_spot_maps(encoder, tokenizer, cube, transform: Callable | None, domain_id: int, heads: list[str],
                    block: int, offsets: int, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """{head: (H, W) float32}: every pixel's score while hidden, the maximum over `offsets` phases."""
    unknown = sorted(set(heads) - set(CONTEXT_HEADS))
    if unknown:
        raise ValueError(f"not context heads: {unknown} (they are {CONTEXT_HEADS})")
    if {"ctx_spec", "ctx_rx"} & set(heads) and encoder.spectral_input_dim == 0:
        raise ValueError("ctx_spec and ctx_rx need an encoder pre-trained with spectral_input: true")
    height, width = cube.shape[:2]
    cell = tokenizer.patch_size // tokenizer.grid_size
    block_px = block * cell
    maps = {name: np.full((height, width), -np.inf, dtype=np.float32) for name in heads}
    whitener = None
    if "ctx_rx" in heads:
        whitener = residual_whitener(encoder, tokenizer, cube, transform, domain_id, block_px, batch_size, device)
    for k in range(offsets):
        phase = (k * block_px) // offsets
        windows = BlindSpotWindows(height, width, tokenizer.patch_size, block_px, phase)
        for first, scores in score_windows(encoder, tokenizer, windows, cube, transform, domain_id, heads,
                                           batch_size, device, whitener):
            for i in range(len(next(iter(scores.values())))):
                r0, r1, c0, c1 = windows.boxes[first + i]
                wr, wc = windows.corners[first + i]
                for name in heads:
                    region = scores[name][i, r0 - wr:r1 - wr, c0 - wc:c1 - wc]
                    np.maximum(maps[name][r0:r1, c0:c1], region, out=maps[name][r0:r1, c0:c1])
    return maps
