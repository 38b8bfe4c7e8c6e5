"""Tokenising many overlapping windows of one scene, each pixel's spectral work done once.

    windows = WindowTokenizer(tokenizer, cube, transform, device)
    for index, ids, spectra in windows.windows(corners, batch_size=64):
        ...  # ids (n, T) and cell spectra (n, T, B) of the windows corners[index]

The blind-spot scoring cuts every pixel into several tokenizer windows (a core per window, several
phases, the residual sample), so tokenising each window on its own would prepare and spectrally encode each
pixel dozens of times. Here the windows are served in stripes of scene rows: a stripe is read and prepared
(`transform`) once, the spectral code of every cell position in it is computed once (a code depends on its
cell's pixels only: `SSPQTokenizer.spectral_codes`), and each window gathers its codes and cell spectra from
there. Only the spatial branch, whose codes depend on the window's own borders, runs per window. The ids are
those `SSPQTokenizer.tokenize` gives the same windows cut out one by one (tests/test_window_tokens.py).

Memory: one stripe's prepared rows, cell spectra and codes (about 2x `STRIPE_BUDGET` bytes), whatever the
scene; a scene within the budget is prepared once for all the calls (phases, residual sample) of one scoring.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from data.blocks import read_block
from data.datasets import reflect_index

STRIPE_BUDGET = 1 << 24  # bytes of float32 prepared rows per stripe (16 MiB): a 100 x 100 x 128 scene fits whole


def _stripes(first_rows: np.ndarray, patch: int, width: int, bands: int) -> Iterator[np.ndarray]:
    """Index arrays into the windows (sorted by their first row `first_rows` (N,)), one per stripe of rows."""
    step = max(1, STRIPE_BUDGET // max(1, 4 * width * bands) - patch)
    start = 0
    while start < len(first_rows):
        stop = int(np.searchsorted(first_rows, first_rows[start] + step, side="left"))
        yield np.arange(start, stop)
        start = stop


class WindowTokenizer:
    """Tokens of tokenizer windows of one scene (module docstring). A scene whose prepared rows fit
    `STRIPE_BUDGET` is prepared and spectrally encoded once for every call of `windows`; a larger one once
    per stripe of each call.

    tokenizer: an SSPQTokenizer in eval mode; cube (H, W, B_raw) ndarray or memmap; transform (..., B_raw) ->
    (..., B) or None for a prepared cube; ids: False serves None for the ids (no spectral or spatial codes)."""

    def __init__(self, tokenizer, cube, transform: Callable | None, device: torch.device | str, ids: bool = True):
        if tokenizer.training:
            raise RuntimeError("WindowTokenizer needs the tokenizer in eval mode (frozen codebooks)")
        self.tokenizer, self.cube, self.transform, self.device = tokenizer, cube, transform, device
        self.ids = ids  # False: the caller hides every id, so only cell spectra are served (no codes computed)
        self._cached: tuple | None = None  # (bounds (r0, r1, c0, c1), pixels, pooled, codes) of a scene that fits
        self._codes: torch.Tensor | None = None  # (H', W') spectral codes of a larger scene's rows encoded so far
        self._done: np.ndarray | None = None  # (H',) bool: which of those rows are filled

    def _encode(self, pooled: torch.Tensor) -> torch.Tensor:
        """Spectral codes (R', C') of the cell means (R', C', B), 16k cells at a time."""
        bands = self.tokenizer.num_bands
        return torch.cat([self.tokenizer.spectral_codes(chunk[:, None, :])[:, 0]
                          for chunk in pooled.reshape(-1, bands).split(1 << 14)]).reshape(pooled.shape[:2])

    def _row_codes(self, r0: int, pooled: torch.Tensor) -> torch.Tensor:
        """Spectral codes (R', W') of full-width cell rows r0.. (`pooled` (R', W', B)), each scene row encoded once
        over all calls: a stripe of a large scene reuses the rows an earlier stripe or call encoded."""
        if self._codes is None:
            rows = self.cube.shape[0] - self.tokenizer.spectral_cell + 1
            self._codes = torch.empty(rows, pooled.shape[1], dtype=torch.long, device=pooled.device)
            self._done = np.zeros(len(self._codes), dtype=bool)
        rows = np.arange(r0, r0 + pooled.shape[0])
        todo = rows[~self._done[rows]]
        if len(todo):
            self._codes[torch.from_numpy(todo).to(pooled.device)] = self._encode(pooled[torch.from_numpy(todo - r0)])
            self._done[todo] = True
        return self._codes[r0:r0 + pooled.shape[0]]

    def _stripe(self, r0: int, r1: int, c0: int, c1: int) -> tuple:
        """(r0, c0, pixels (R, C, B), cell means (R', C', B), spectral codes (R', C')) of at least rows r0..r1-1,
        cols c0..c1-1 (mirrored outside the image), with (r0, c0) at their origin: the whole scene, computed
        once and kept, when it fits the budget; else full-width rows, whose codes are kept (`_row_codes`)."""
        height, width = self.cube.shape[:2]
        if self._cached is not None:
            (q0, q1, p0, p1), *arrays = self._cached
            if q0 <= r0 and r1 <= q1 and p0 <= c0 and c1 <= p1:
                return (q0, p0, *arrays)
        fits = 4 * self.tokenizer.num_bands * (max(height, r1) - min(0, r0)) * (max(width, c1) - min(0, c0)) <= STRIPE_BUDGET
        inside = r0 >= 0 and r1 <= height and c0 >= 0 and c1 <= width
        if fits:  # the whole scene (and these mirrored margins)
            r0, r1, c0, c1 = min(0, r0), max(height, r1), min(0, c0), max(width, c1)
        elif inside:
            c0, c1 = 0, width
        cell = self.tokenizer.spectral_cell
        rows, cols = reflect_index(np.arange(r0, r1), height), reflect_index(np.arange(c0, c1), width)
        needed = np.unique(rows)
        raw = read_block(self.cube, needed)[np.searchsorted(needed, rows)][:, cols]  # (R, C, B_raw): rows read once
        prepared = raw if self.transform is None else self.transform(raw)  # (R, C, B)
        pixels = torch.from_numpy(np.ascontiguousarray(prepared, dtype=np.float32)).to(self.device)  # (R, C, B)
        if cell > 1:  # cell means at every cell origin
            planes = pixels.permute(2, 0, 1).contiguous()[None]  # (1, B, R, C), as cells() pools it
            pooled = F.avg_pool2d(planes, cell, stride=1)[0].permute(1, 2, 0).contiguous()  # (R', C', B)
        else:
            pooled = pixels  # (R', C', B)
        if not self.ids:
            codes = None
        elif inside and not fits:
            codes = self._row_codes(r0, pooled)
        else:
            codes = self._encode(pooled)
        if fits:
            self._cached = ((r0, r1, c0, c1), pixels, pooled, codes)
        return r0, c0, pixels, pooled, codes

    @torch.no_grad()
    def windows(self, corners: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Yield (index (n,), joint ids (n, T) or None (`ids` False), cell spectra (n, T_s, B) float32) for the windows at top-left
        `corners` (N, 2) (sorted by row), `batch_size` at a time, in their order. Corners outside the image
        read mirrored pixels, as HSIPatchExtractor does."""
        corners = np.asarray(corners, dtype=np.int64)
        if len(corners) and np.any(np.diff(corners[:, 0]) < 0):
            raise ValueError("window corners must be sorted by row")
        tok = self.tokenizer
        patch, bands = tok.patch_size, tok.num_bands
        offsets = torch.arange(patch, device=self.device)  # (S,)
        grid = torch.arange(0, patch, tok.spectral_cell, device=self.device)  # (g_s,) cell origins in a window
        for stripe in _stripes(corners[:, 0], patch, self.cube.shape[1], bands):
            part = corners[stripe]  # (m, 2)
            r0, c0, pixels, pooled, codes = self._stripe(int(part[:, 0].min()), int(part[:, 0].max()) + patch,
                                                         int(part[:, 1].min()), int(part[:, 1].max()) + patch)
            width, cells_width = pixels.shape[1], pooled.shape[1]
            flat, flat_cells = pixels.reshape(-1, bands), pooled.reshape(-1, bands)  # (R*C, B), (R'*C', B)
            for first in range(0, len(stripe), batch_size):
                local = torch.from_numpy(part[first:first + batch_size] - [r0, c0]).to(self.device)  # (n, 2)
                n = len(local)
                gr, gc = local[:, :1] + grid, local[:, 1:] + grid  # (n, g_s) each
                at = (gr[:, :, None] * cells_width + gc[:, None, :]).reshape(n, -1)  # (n, T_s) cell positions
                spectra = flat_cells[at]  # (n, T_s, B)
                if not self.ids:
                    yield stripe[first:first + batch_size], None, spectra
                    continue
                pr, pc = local[:, :1] + offsets, local[:, 1:] + offsets  # (n, S) each
                gathered = flat[(pr[:, :, None] * width + pc[:, None, :]).reshape(n, -1)]  # (n, S*S, B)
                patches = gathered.transpose(1, 2).reshape(n, bands, patch, patch).contiguous()  # (n, B, S, S)
                k = codes.reshape(-1)[at]  # (n, T_s)
                yield stripe[first:first + batch_size], tok.joint_ids(k, patches), spectra  # (n, T), (n, T_s, B)
