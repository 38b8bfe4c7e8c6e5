"""anomaly/accumulate.py: patch scores back onto the image, each pixel the mean of the patches covering it."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.accumulate import ScoreAccumulator
from data.datasets import HSIPatchExtractor


@pytest.mark.parametrize("height,width", [(1, 1), (1, 17), (7, 13), (23, 9)])
@pytest.mark.parametrize("patch_size,stride", [(1, None), (5, 2), (11, None), (6, 4)])
def test_patches_of_an_image_accumulate_back_to_it(height, width, patch_size, stride):
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = (rows * 1000 + cols).astype(np.float32)  # (H, W): every value names its pixel
    patches, coords = HSIPatchExtractor(patch_size, stride).extract_patches(image[..., None])  # (N, 1, S, S)
    acc = ScoreAccumulator(height, width)
    acc.add(coords, patches[:, 0])
    assert np.array_equal(acc.result(), image)  # every covering patch agrees on each pixel


def test_overlaps_average_and_gaps_are_refused():
    acc = ScoreAccumulator(2, 3)
    acc.add(np.array([[0, 0], [0, 1]]), np.array([np.full((2, 2), 1.0), np.full((2, 2), 3.0)]))
    assert np.array_equal(acc.result(), np.array([[1, 2, 3], [1, 2, 3]], dtype=np.float32))
    partial = ScoreAccumulator(3, 3)
    partial.add(np.array([[-1, -1]]), np.ones((1, 3, 3)))  # clipped: covers rows/cols 0-1 only
    with pytest.raises(RuntimeError, match="5 of 9 pixels"):
        partial.result()
    with pytest.raises(ValueError, match="non-finite"):
        partial.add(np.array([[0, 0]]), np.full((1, 2, 2), np.nan))
