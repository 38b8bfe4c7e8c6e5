"""Where the blind-spot cores and their windows lie (the geometry of anomaly/blind_spot.py).

At one phase the scene is tiled with square cores of `block_px` pixels (`core_starts`); every pixel lies in
one core. A window is a tokenizer patch placed inside the image, and the cores it hides are (`score_layout`):

- block: one core per window, centred in it (shifted to lie inside the image), the family Stage 2 trains on;
- lattice: the cores of one parity class (core row index % 2, core column index % 2) that fall in the window,
  one core apart: a window of S pixels holds about (S / 2 block_px)^2 of them, and the 4 classes' windows
  together hide every core once or more. A quarter of block's windows for 2 x 2 cores in 8 x 8 windows, at the
  price of context: each core sits nearer its window's edge, beside hidden neighbours;
- pairs: a lattice along the columns only (the cores' rows centred as in block): half of block's windows.

A window's core pixels are an outer product: `rows[n]` (S,) x `cols[n]` (S,) in window coordinates, every
layout alike, so that masks and painting need no layout of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from anomaly.config import SCORE_LAYOUTS


def core_starts(length: int, block: int, phase: int) -> np.ndarray:
    """Start pixels (n,) of the cores tiling [0, length) with `block`-pixel cores at `phase` (the first
    core is cut at the image edge when phase > 0)."""
    first = phase - block if phase > 0 else 0
    return np.arange(first, length, block, dtype=np.int64)


def _placed(start: np.ndarray, patch: int, length: int) -> np.ndarray:
    """Window starts (n,) for wished starts (n,): shifted to lie inside [0, length); a scene shorter than the
    patch keeps the window centred on it (mirrored pixels then)."""
    if length < patch:
        return np.full_like(start, (length - patch) // 2)
    return np.clip(start, 0, length - patch)


def _block_axis(length: int, patch: int, block: int, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """(window starts (n,), core pixels (n, S) bool in window coordinates): one window per core, centred on it."""
    cores = core_starts(length, block, phase)  # (n,)
    starts = _placed(cores + block // 2 - patch // 2, patch, length)  # (n,)
    x = starts[:, None] + np.arange(patch)  # (n, S) scene coordinates
    return starts, (x >= np.maximum(cores, 0)[:, None]) & (x < np.minimum(cores + block, length)[:, None])


def _lattice_axis(length: int, patch: int, block: int, phase: int, parity: int) -> tuple[np.ndarray, np.ndarray]:
    """(window starts (n,), core pixels (n, S) bool): windows whose cores of class `parity` (every second core)
    cover all of that class, each window centred on the run of class cores that fits it, shifted inside the image."""
    cores = core_starts(length, block, phase)  # (n,)
    ours = cores[parity::2]  # (m,) this class's cores, 2 * block apart
    fits = max(1, (patch + block) // (2 * block))  # class cores a window holds
    margin = (patch - (2 * fits - 1) * block) // 2
    starts = []
    i = 0
    while i < len(ours):
        start = int(_placed(np.array([ours[i] - margin]), patch, length)[0])
        starts.append(start)
        inside = (np.maximum(ours, 0) >= start) & (np.minimum(ours + block, length) <= start + patch)
        later = np.flatnonzero(~inside[i:])
        i = i + int(later[0]) if len(later) else len(ours)
    starts = np.asarray(starts, dtype=np.int64)  # (w,)
    x = starts[:, None] + np.arange(patch)  # (w, S)
    return starts, (x >= 0) & (x < length) & ((x - cores[0]) // block % 2 == parity)


@dataclass
class BlindSpotWindows:
    """The windows of one phase, sorted by row: corners (N, 2) in the image, and the pixels of the cores each
    hides as rows (N, S) x cols (N, S), bool in window coordinates."""

    corners: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def tile(cls, layout: str, height: int, width: int, patch: int, block_px: int, phase: int) -> "BlindSpotWindows":
        """The windows of `layout` (one of SCORE_LAYOUTS: block, pairs, lattice; module docstring) at `phase`."""
        if layout == "block":
            axes = [(_block_axis(height, patch, block_px, phase), _block_axis(width, patch, block_px, phase))]
        elif layout == "pairs":
            axes = [(_block_axis(height, patch, block_px, phase), _lattice_axis(width, patch, block_px, phase, q))
                    for q in (0, 1)]
        elif layout == "lattice":
            axes = [(_lattice_axis(height, patch, block_px, phase, p), _lattice_axis(width, patch, block_px, phase, q))
                    for p in (0, 1) for q in (0, 1)]
        else:
            raise ValueError(f"blind-spot layout {layout!r}: use one of {', '.join(SCORE_LAYOUTS)}")
        corners, rows, cols = [], [], []
        for (row_starts, row_cores), (col_starts, col_cores) in axes:
            r, c = np.meshgrid(np.arange(len(row_starts)), np.arange(len(col_starts)), indexing="ij")
            r, c = r.ravel(), c.ravel()  # (n,) every row window with every column window
            corners.append(np.stack([row_starts[r], col_starts[c]], axis=1))
            rows.append(row_cores[r])
            cols.append(col_cores[c])
        corners = np.concatenate(corners)  # (N, 2)
        order = np.argsort(corners[:, 0], kind="stable")
        return cls(corners[order], np.concatenate(rows)[order], np.concatenate(cols)[order])

    def core_pixels(self, index: np.ndarray) -> np.ndarray:
        """(n, S, S) bool: the core pixels of the windows `index` (n,) in window coordinates."""
        return self.rows[index][:, :, None] & self.cols[index][:, None, :]

    def core_masks(self, index: np.ndarray, cell: int) -> torch.Tensor:
        """(n, T) bool over the token grids of the windows `index` (n,): the cells that hold core pixels."""
        n, patch = len(index), self.rows.shape[1]
        rows = self.rows[index].reshape(n, patch // cell, cell).any(axis=2)  # (n, g)
        cols = self.cols[index].reshape(n, patch // cell, cell).any(axis=2)  # (n, g)
        return torch.from_numpy((rows[:, :, None] & cols[:, None, :]).reshape(n, -1))
