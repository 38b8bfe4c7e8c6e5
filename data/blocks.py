"""Reading blocks of a cube that may be a read-only memmap, without keeping the file resident.

    block = read_block(cube, slice(r0, r1), np.float64)   # rows r0:r1 as an in-memory array

A memmapped scene (`.npy`, ENVI) is read in blocks of rows so that it is never held whole, but the pages a
block read stay mapped into the process: after one pass over a 512 MiB cube its resident memory holds those
512 MiB of file pages until the scene is closed. `read_block` copies the block and then tells the kernel that
the mapping's pages are not needed (`madvise(MADV_DONTNEED)`; they stay in the page cache, so a later read is
still cheap), so the resident memory of a scene pass is bounded by the block. Only read-only memmaps
(mode 'r') are released: dropping the pages of a copy-on-write mapping would discard its changes.
"""

from __future__ import annotations

import mmap

import numpy as np


ADVICE = getattr(mmap, "MADV_DONTNEED", None)  # absent where the OS has no madvise (then nothing to release)


def _read_only_mapping(array: np.ndarray):
    """The mmap.mmap under a read-only memmap (or a view of one), else None."""
    mapping = getattr(array, "_mmap", None)  # numpy.memmap keeps its mmap.mmap here, and views share it
    return mapping if getattr(array, "mode", None) == "r" else None


def read_block(cube: np.ndarray, index, dtype: np.dtype | None = None) -> np.ndarray:
    """`np.asarray(cube[index], dtype)`, with a read-only memmapped cube's pages released after the read (the
    block is then an array of its own)."""
    block = np.asarray(cube[index], dtype=dtype)
    mapping = _read_only_mapping(cube)
    if mapping is not None:
        if np.may_share_memory(block, cube):
            block = block.copy()  # its own memory: using it must not fault the released pages back in
        if ADVICE is not None:
            mapping.madvise(ADVICE)
    return block


ROW_BUDGET = 1 << 23  # float64 values in one block of rows (64 MiB)


def rows_per_chunk(width: int, values_per_pixel: int) -> int:
    """Rows of a (H, width, values_per_pixel) array whose float64 block stays near ROW_BUDGET values."""
    return max(1, ROW_BUDGET // max(1, width * values_per_pixel))


class NoDataRows:
    """Read-only view of a cube (H, W, B) whose no-data pixels (`valid` (H, W) False) read as NaN in every band, so
    whatever value a product stored there (a fill value, zeros) never reaches a statistic or a score: the fitted
    preprocessing repairs them to one fixed spectrum. Indexed by rows only (an int, a slice or an array of rows), as
    every scene reader of the project indexes a cube."""

    def __init__(self, cube: np.ndarray, valid: np.ndarray):
        self.cube, self.valid = cube, np.asarray(valid, dtype=bool)
        self.shape, self.ndim = cube.shape, 3

    def __getitem__(self, rows) -> np.ndarray:
        block = np.array(read_block(self.cube, rows), dtype=np.float32 if self.cube.dtype != np.float64 else None)
        block[~self.valid[rows]] = np.nan  # (..., B): every band of a no-data pixel
        return block
