"""Patches from scenes and the training dataset over many scenes.

    ext = HSIPatchExtractor(patch_size=11)                   # stride 5, reflect padding of 5
    for patches, coords in ext.iter_batches(cube, 256, transform=prep.transform):
        scores = model(patches)                              # (n, S, S); anomaly.accumulate puts them back

Patch grid: the image is reflect-padded by `pad = patch_size // 2` on every side (np.pad's 'reflect':
... 2 1 | 0 1 2 ... | ... ; repeated for pads wider than the image; a side of length 1 repeats its one
pixel). The padding is never materialised: patch pixels are mapped to image pixels by index
arithmetic, and only the rows a batch needs are read, so a memmapped cube stays on disk. Along each
axis of length L, patch starts run from -pad with step `stride`, plus a final start L - 1 - pad when
the step misses it, so patch centres reach the first and last pixel. With stride <= patch_size every
pixel of any H x W (1 x N strips, sides smaller than the patch, sizes not aligned to the stride) is
covered. Coords are the top-left (row, col) in the ORIGINAL image, negative in the padded border.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from data.blocks import read_block
from utils.errors import ConfigError, DataError


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Image index of (possibly out-of-range) `index` under np.pad(mode='reflect'), any distance out."""
    index = np.asarray(index, dtype=np.int64)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def _check_cube(cube: np.ndarray) -> None:
    if getattr(cube, "ndim", None) != 3 or cube.shape[0] < 1 or cube.shape[1] < 1:
        raise DataError(f"a cube must be 3-D (H, W, B) with H, W >= 1, got shape {getattr(cube, 'shape', None)}")


class HSIPatchExtractor:
    """Overlapping S x S patches over a reflect-padded grid (module doc)."""

    def __init__(self, patch_size: int, stride: int | None = None):
        if not isinstance(patch_size, (int, np.integer)) or isinstance(patch_size, bool) or patch_size < 1:
            raise ConfigError(f"patch_size must be an integer >= 1, got {patch_size!r}")
        stride = max(1, patch_size // 2) if stride is None else stride  # spec default patch_size // 2
        if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
            raise ConfigError(f"stride must be an integer >= 1, got {stride!r}")
        if stride > patch_size:
            raise ConfigError(f"stride {stride} > patch_size {patch_size} would leave pixels between patches unscored")
        self.patch_size = int(patch_size)
        self.stride = int(stride)
        self.pad = self.patch_size // 2

    def starts(self, length: int) -> np.ndarray:
        """Patch start positions along one axis of `length` pixels: (n,) int64, from -pad."""
        last = length - 1 - self.pad
        starts = np.arange(-self.pad, last + 1, self.stride, dtype=np.int64)
        return starts if starts[-1] == last else np.append(starts, last)

    def coords(self, height: int, width: int) -> np.ndarray:
        """All patch top-left corners, row-major: (N, 2) int64."""
        rows, cols = np.meshgrid(self.starts(height), self.starts(width), indexing="ij")  # (nr, nc) each
        return np.stack([rows.ravel(), cols.ravel()], axis=1)  # (N, 2)

    def inside_coords(self, height: int, width: int) -> np.ndarray:
        """Patch top-left corners with every patch inside the image (no mirrored pixels), `stride` apart
        plus a last one flush with the far edge: (N, 2) int64, row-major."""
        if height < self.patch_size or width < self.patch_size:
            raise DataError(f"a {height} x {width} scene is smaller than one {self.patch_size}-pixel patch")
        axes = []
        for length in (height, width):
            starts = np.arange(0, length - self.patch_size + 1, self.stride, dtype=np.int64)
            axes.append(starts if starts[-1] == length - self.patch_size else np.append(starts, length - self.patch_size))
        rows, cols = np.meshgrid(*axes, indexing="ij")  # (nr, nc) each
        return np.stack([rows.ravel(), cols.ravel()], axis=1)  # (N, 2)

    def gather(self, cube: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Raw patches at `coords` (n, 2): (n, S, S, B) in the cube's dtype, reading only the rows needed."""
        height, width = cube.shape[:2]
        offsets = np.arange(self.patch_size)
        rows = reflect_index(coords[:, :1] + offsets, height)  # (n, S)
        cols = reflect_index(coords[:, 1:] + offsets, width)  # (n, S)
        needed = np.unique(rows)
        block = read_block(cube, needed)  # (r, W, B): only these rows are read from a memmap
        local = np.searchsorted(needed, rows)  # (n, S) row index into block
        return block[local[:, :, None], cols[:, None, :]]  # (n, S, S, B)

    def with_data(self, coords: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """The corners (m, 2) of `coords` (n, 2) whose patch holds no no-data pixel (`valid` (H, W) False), so that
        a product's fill values never reach a training patch; all of them when `valid` is None."""
        if valid is None:
            return coords
        inside = self.gather(np.asarray(valid, dtype=bool)[..., None], coords)[..., 0]  # (n, S, S)
        return coords[inside.all(axis=(1, 2))]

    def _patches(self, cube: np.ndarray, coords: np.ndarray, transform: Callable | None) -> np.ndarray:
        raw = self.gather(cube, coords)  # (n, S, S, B)
        if transform is not None:
            raw = transform(raw)  # (n, S, S, B')
        return np.ascontiguousarray(np.asarray(raw).transpose(0, 3, 1, 2), dtype=np.float32)  # (n, B', S, S)

    def extract_patches(self, cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All patches at once: `(patches (N, B, S, S) float32, coords (N, 2) int64)`."""
        _check_cube(cube)
        coords = self.coords(*cube.shape[:2])
        return self._patches(cube, coords, None), coords

    def iter_batches(self, cube: np.ndarray, batch_size: int,
                     transform: Callable[[np.ndarray], np.ndarray] | None = None, coords: np.ndarray | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield `(patches (n, B', S, S) float32, coords (n, 2))` in extract_patches' order, or at the
        given top-left `coords` (N, 2) in their order.

        `transform` maps each raw block (n, S, S, B) -> (n, S, S, B'), e.g. SpectralPreprocessor.transform.
        """
        _check_cube(cube)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        coords = self.coords(*cube.shape[:2]) if coords is None else coords
        for first in range(0, len(coords), batch_size):
            batch = coords[first:first + batch_size]  # (n, 2)
            yield self._patches(cube, batch, transform), batch


class PatchDataset(Dataset):
    """Every patch of every prepared cube: item -> `(patch (B, S, S) float32 tensor, domain_id int)`.

    `item_domains` (N,) holds each item's domain id, for `balanced_sampler`. `transform` (data.transforms)
    is applied to each patch tensor.
    """

    def __init__(self, cubes: list[np.ndarray], domain_ids: list[int], extractor: HSIPatchExtractor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not cubes or len(cubes) != len(domain_ids):
            raise DataError(f"need one domain id per cube and at least one cube, got {len(cubes)} cubes "
                            f"and {len(domain_ids)} domain ids")
        for cube in cubes:
            _check_cube(cube)
        widths = {cube.shape[2] for cube in cubes}
        if len(widths) > 1:
            raise DataError(f"prepared cubes differ in band count ({sorted(widths)}); resample them to one num_bands")
        self.cubes = cubes
        self.domain_ids = [int(d) for d in domain_ids]
        self.extractor = extractor
        self.transform = transform
        self.coords = [extractor.coords(*cube.shape[:2]) for cube in cubes]  # list of (N_i, 2)
        sizes = [len(c) for c in self.coords]
        self.offsets = np.cumsum([0] + sizes)  # (num_cubes + 1,)
        self.item_domains = np.repeat(self.domain_ids, sizes)  # (N,)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} patches")
        which = int(np.searchsorted(self.offsets, index, side="right") - 1)
        corner = self.coords[which][index - self.offsets[which]][None]  # (1, 2)
        patch = self.extractor.gather(self.cubes[which], corner)[0]  # (S, S, B)
        x = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1), dtype=np.float32))  # (B, S, S)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.domain_ids[which]


def balanced_sampler(domain_ids: Sequence[int] | np.ndarray, num_samples: int,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """Sampler drawing every domain equally often, whatever its number of items (with replacement).

    `domain_ids` is the domain of each item (e.g. `PatchDataset.item_domains`); within a domain,
    items are drawn uniformly.
    """
    ids = np.asarray(domain_ids).reshape(-1)
    if ids.size == 0:
        raise DataError("balanced_sampler: no items to sample from")
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ConfigError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    domains, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    weights = 1.0 / (counts[inverse] * len(domains))  # (N,) sums to 1
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), int(num_samples),
                                 replacement=True, generator=generator)
