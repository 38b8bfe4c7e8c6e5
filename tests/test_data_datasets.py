"""data.datasets and data.transforms: patch grid coverage, coords, streaming, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.datasets import HSIPatchExtractor, PatchDataset, balanced_sampler, reflect_index
from data.preprocess import SpectralPreprocessor
from data.transforms import Compose, GaussianNoise, RandomRot90Flip
from utils.errors import ConfigError, DataError
from fakes import RowRecorder

SHAPES = [(1, 1), (1, 17), (17, 1), (2, 3), (4, 4), (7, 13), (10, 10), (23, 9), (30, 31)]
GRIDS = [(1, None), (3, 1), (4, None), (5, 2), (5, 5), (11, None), (11, 11), (6, 4)]


def cube_of(height: int, width: int, bands: int = 3) -> np.ndarray:
    """Every value names its pixel and band, so patches can be traced back."""
    rows, cols, b = np.meshgrid(np.arange(height), np.arange(width), np.arange(bands), indexing="ij")
    return (rows * 1000 + cols + b / 10).astype(np.float32)


def test_reflect_index_matches_numpy_pad():
    for length in (2, 3, 5):
        for pad in (1, 4, 11):  # including pads wider than the axis
            padded = np.pad(np.arange(length), pad, mode="reflect")
            assert np.array_equal(reflect_index(np.arange(-pad, length + pad), length), padded)
    assert np.array_equal(reflect_index(np.arange(-3, 4), 1), np.zeros(7))


@pytest.mark.parametrize("height,width", SHAPES)
@pytest.mark.parametrize("patch_size,stride", GRIDS)
def test_every_pixel_covered_and_coords_map_back(height, width, patch_size, stride):
    ext = HSIPatchExtractor(patch_size, stride)
    cube = cube_of(height, width)
    patches, coords = ext.extract_patches(cube)
    assert patches.shape == (len(ext.coords(height, width)), 3, patch_size, patch_size)
    assert patches.dtype == np.float32 and coords.dtype == np.int64
    # each patch pixel is the reflected image pixel at coords + offset
    offsets = np.arange(patch_size)
    rows = reflect_index(coords[:, :1] + offsets, height)  # (N, S)
    cols = reflect_index(coords[:, 1:] + offsets, width)
    assert np.array_equal(patches[:, 0], rows[:, :, None] * 1000.0 + cols[:, None, :])
    # rebuild the cube from the in-image part of every patch: every pixel written, all consistent
    rebuilt = np.full((height, width, 3), np.nan, dtype=np.float32)
    rows, cols = coords[:, :1] + offsets, coords[:, 1:] + offsets  # (N, S) each, unreflected
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]  # (N, S, S)
    pixel_rows = np.broadcast_to(rows[:, :, None], inside.shape)[inside]
    pixel_cols = np.broadcast_to(cols[:, None, :], inside.shape)[inside]
    rebuilt[pixel_rows, pixel_cols] = patches.transpose(0, 2, 3, 1)[inside]  # (M, 3)
    assert np.array_equal(rebuilt, cube)


def test_first_and_last_patch_are_centred_on_the_corners():
    ext = HSIPatchExtractor(5, 2)
    starts = ext.starts(10)
    assert starts[0] == -2 and starts[-1] == 10 - 1 - 2 and np.all(np.diff(starts) <= 2)


def test_iter_batches_equals_extract_patches_and_applies_transform():
    cube = cube_of(13, 11, bands=6)
    ext = HSIPatchExtractor(5)
    patches, coords = ext.extract_patches(cube)
    batches = list(ext.iter_batches(cube, batch_size=7))
    assert len(batches) == -(-len(coords) // 7)
    assert np.array_equal(np.concatenate([p for p, _ in batches]), patches)
    assert np.array_equal(np.concatenate([c for _, c in batches]), coords)
    prep = SpectralPreprocessor.fit(cube, num_bands=4)
    streamed = np.concatenate([p for p, _ in ext.iter_batches(cube, 10, transform=prep.transform)])
    expected = prep.transform(cube)  # (H, W, 4), then patches of it
    assert np.allclose(streamed, ext.extract_patches(expected)[0], atol=1e-6)


def test_iter_batches_reads_only_the_rows_it_needs(tmp_path):
    cube = cube_of(40, 12, bands=4)
    ext = HSIPatchExtractor(5, 2)
    recorder = RowRecorder(cube)
    per_row = len(ext.starts(12))
    streamed = list(ext.iter_batches(recorder, batch_size=per_row))  # one row of patches per batch
    assert max(recorder.reads) == 5
    path = tmp_path / "cube.npy"
    np.save(path, cube)
    memmap = np.load(path, mmap_mode="r")
    from_disk = list(ext.iter_batches(memmap, batch_size=per_row))
    assert isinstance(memmap, np.memmap)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(streamed, from_disk))


@pytest.mark.parametrize("patch_size,stride", [(0, None), (3, 0), (3, 4), (2.5, None), (3, -1)])
def test_extractor_config_errors(patch_size, stride):
    with pytest.raises(ConfigError):
        HSIPatchExtractor(patch_size, stride)


def test_extractor_data_errors():
    with pytest.raises(DataError, match="3-D"):
        HSIPatchExtractor(3).extract_patches(np.zeros((4, 4)))
    with pytest.raises(ConfigError, match="batch_size"):
        next(HSIPatchExtractor(3).iter_batches(np.zeros((4, 4, 2)), 0))


def test_patch_dataset_items_and_checks():
    cubes = [cube_of(6, 5, bands=4), cube_of(3, 4, bands=4)]
    ext = HSIPatchExtractor(3)
    dataset = PatchDataset(cubes, [7, 2], ext)
    assert len(dataset) == len(ext.coords(6, 5)) + len(ext.coords(3, 4))
    first, domain = dataset[0]
    assert isinstance(first, torch.Tensor) and first.dtype == torch.float32 and first.shape == (4, 3, 3)
    assert domain == 7 and dataset[len(dataset) - 1][1] == 2
    assert np.array_equal(first.numpy(), ext.extract_patches(cubes[0])[0][0])
    last, _ = dataset[len(dataset) - 1]
    assert np.array_equal(last.numpy(), ext.extract_patches(cubes[1])[0][-1])
    assert list(np.unique(dataset.item_domains, return_counts=True)[1]) == [len(ext.coords(3, 4)),
                                                                              len(ext.coords(6, 5))]
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    with pytest.raises(DataError, match="band count"):
        PatchDataset([cube_of(4, 4, 3), cube_of(4, 4, 5)], [0, 1], ext)
    with pytest.raises(DataError, match="one domain id per cube"):
        PatchDataset(cubes, [0], ext)


def test_balanced_sampler_draws_domains_equally():
    domains = np.array([0] * 10_000 + [1] * 1_000 + [2] * 100)
    sampler = balanced_sampler(domains, num_samples=30_000, generator=torch.Generator().manual_seed(0))
    drawn = domains[np.fromiter(iter(sampler), dtype=np.int64)]
    shares = np.bincount(drawn, minlength=3) / drawn.size
    assert np.all(np.abs(shares - 1 / 3) < 0.02), shares
    with pytest.raises(ConfigError):
        balanced_sampler(domains, 0)


def test_transforms_are_symmetries_and_noise_is_seeded():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    seen = set()
    rot = RandomRot90Flip(torch.Generator().manual_seed(0))
    for _ in range(200):
        y = rot(x)
        assert y.shape == x.shape and torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
        assert torch.equal(y[1] - y[0], torch.full((4, 4), 16.0))  # the same move on every band
        seen.add(tuple(y[0].flatten().tolist()))
    assert len(seen) == 8  # all symmetries of the square
    noisy = [GaussianNoise(0.5, torch.Generator().manual_seed(3))(x) for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1]) and 0.3 < (noisy[0] - x).std() < 0.7
    pipeline = Compose([RandomRot90Flip(), GaussianNoise(0.0)])
    assert pipeline(x).shape == x.shape
    with pytest.raises(ConfigError):
        GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="B, S, S"):
        rot(torch.zeros(3, 4, 5))
