"""Training-time augmentation of patch tensors `(B, S, S)` (Stage 1 / 2 only; spec 3.2).

    augment = Compose([RandomRot90Flip(), GaussianNoise(std=0.01)])
    dataset = PatchDataset(cubes, domain_ids, extractor, transform=augment)

Each transform draws from its own `torch.Generator` when given one (reproducible in a single process),
else from torch's global generator (which a DataLoader seeds differently in every worker; a shared
generator object would repeat the same draws in each worker).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from utils.errors import ConfigError


def _check_patch(x: torch.Tensor) -> None:
    if x.dim() < 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected patches (..., B, S, S), got shape {tuple(x.shape)}")


class RandomRot90Flip:
    """One of the 8 symmetries of the square, uniformly: rotate by k * 90 degrees, then maybe flip."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_patch(x)
        k, flip = torch.randint(0, 4, (2,), generator=self.generator).tolist()
        x = torch.rot90(x, k, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if flip % 2 else x


class GaussianNoise:
    """Add i.i.d. N(0, std^2) noise (std in the units of the normalised cube, e.g. 0.01 for min-max)."""

    def __init__(self, std: float, generator: torch.Generator | None = None):
        if not std >= 0:
            raise ConfigError(f"noise std must be >= 0, got {std!r}")
        self.std = float(std)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_patch(x)
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        return x + self.std * noise


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]]):
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x
