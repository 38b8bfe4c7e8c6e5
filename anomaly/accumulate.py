"""Per-pixel scores from patch scores: each pixel's mean over the patches covering it (spec 6.2 step 3).

    acc = ScoreAccumulator(H, W)
    for patches, coords in HSIPatchExtractor(11).iter_batches(cube, 256):   # data.datasets
        acc.add(coords, model(patches))                                      # scores (n, S, S)
    anomaly_map = acc.result()                                               # (H, W) float32
"""

from __future__ import annotations

import numpy as np
import torch


class ScoreAccumulator:
    """Average per-pixel patch scores over all patches covering each pixel (spec 6.2 step 3)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = int(height), int(width)
        self.total = np.zeros(self.height * self.width)  # (H*W,) float64
        self.count = np.zeros(self.height * self.width, dtype=np.int64)  # (H*W,)

    def add(self, coords: np.ndarray, values: np.ndarray | torch.Tensor) -> None:
        """coords (N, 2) top-left corners, values (N, S, S) scores; cells outside the image are dropped."""
        if isinstance(values, torch.Tensor):
            values = values.detach().float().cpu().numpy()
        values = np.asarray(values, dtype=np.float64)
        coords = np.asarray(coords, dtype=np.int64)
        if values.ndim != 3 or values.shape[1] != values.shape[2] or coords.shape != (values.shape[0], 2):
            raise ValueError(f"expected coords (N, 2) and values (N, S, S), got {coords.shape} and {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("non-finite patch scores")
        offsets = np.arange(values.shape[1])
        rows = coords[:, :1] + offsets  # (N, S)
        cols = coords[:, 1:] + offsets  # (N, S)
        inside = (((rows >= 0) & (rows < self.height))[:, :, None]
                  & ((cols >= 0) & (cols < self.width))[:, None, :])  # (N, S, S)
        flat = rows[:, :, None] * self.width + cols[:, None, :]  # (N, S, S) pixel index
        size = self.height * self.width
        self.total += np.bincount(flat[inside], weights=values[inside], minlength=size)
        self.count += np.bincount(flat[inside], minlength=size)

    def result(self) -> np.ndarray:
        """(H, W) float32 mean score; raises if a pixel was never covered (a bug in the patch grid)."""
        missing = int((self.count == 0).sum())
        if missing:
            raise RuntimeError(f"{missing} of {self.count.size} pixels were covered by no patch")
        return (self.total / self.count).reshape(self.height, self.width).astype(np.float32)
