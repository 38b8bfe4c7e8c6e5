"""Per-scene normalisation before fusion and the smoothing after it (anomaly/fusion.py)."""

import numpy as np
import pytest
import torch

from anomaly.fusion import discount_extent, fuse_scores, line_footprint, normalize_scores, smooth_map


def test_rank_is_the_share_of_lower_pixels_with_ties_sharing_their_mean_rank():
    got = normalize_scores(torch.tensor([3.0, 1.0, 1.0, 2.0, 5.0]), "rank")
    assert torch.allclose(got, torch.tensor([3.0, 0.5, 0.5, 2.0, 4.0]) / 5)
    assert torch.equal(normalize_scores(torch.ones(4, 4), "rank"), torch.zeros(4, 4))


def test_rank_keeps_a_heavy_tailed_head_from_dominating_the_fusion():
    good = torch.zeros(100)
    good[7] = 1.0  # one clear anomaly
    heavy = torch.linspace(0, 1, 100) ** 30  # a failing head with a huge tail elsewhere
    for method, wins in (("robust_z", False), ("rank", True)):
        fused = fuse_scores({"good": good + torch.linspace(0.01, 0, 100), "heavy": heavy},
                            {"good": 1.0, "heavy": 1.0}, method)
        assert (int(fused.argmax()) == 7) == wins, method


def test_log_z_keeps_the_robust_z_order_and_compresses_its_tail():
    x = torch.cat([torch.linspace(-1, 1, 98), torch.tensor([30.0, 3000.0])])
    z, log_z = normalize_scores(x, "robust_z"), normalize_scores(x, "log_z")
    assert torch.equal(log_z.argsort(), z.argsort())
    torch.testing.assert_close(log_z, torch.sign(z) * torch.log1p(z.abs()))
    assert float(z[-1] / z[-2]) > 90 and float(log_z[-1] / log_z[-2]) < 2.5
    assert torch.count_nonzero(normalize_scores(torch.full((3, 3), 5.0), "log_z")) == 0


def test_log_z_lets_a_second_head_outvote_one_extreme_pixel():
    base = torch.linspace(0.0, 1.0, 200)[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    spiky, steady = base.clone(), base.clone()
    spiky[3] = 1e4  # one head's extreme background pixel
    steady[9] = 1000.0  # the anomaly both heads see, the spiky one only moderately
    spiky[9] = 20.0
    for method, wins in (("robust_z", False), ("log_z", True)):
        fused = fuse_scores({"spiky": spiky, "steady": steady}, {"spiky": 1.0, "steady": 1.0}, method)
        assert (int(fused.argmax()) == 9) == wins, method


def test_smoothing_ranks_a_small_object_above_a_brighter_lone_pixel():
    rng = np.random.default_rng(0)
    fused = 0.1 * rng.standard_normal((20, 20)).astype(np.float32)
    fused[5:8, 5:8] = 2.0  # a 3 x 3 object every head finds
    fused[15, 14] = 2.5  # one background pixel one head finds odd
    assert fused[15, 14] > fused[6, 6]
    smoothed = smooth_map(fused, 0.5)
    assert smoothed.shape == fused.shape and smoothed.dtype == np.float32
    assert smoothed[6, 6] > smoothed[15, 14]
    assert smoothed[5:8, 5:8].min() > smoothed[15, 14] * 0.7  # the object's edge pixels keep most of their score


def test_smoothing_zero_is_the_identity_and_bad_input_is_named():
    fused = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(smooth_map(fused, 0), fused)
    np.testing.assert_allclose(smooth_map(np.full((5, 5), 3.0), 0.5), 3.0, rtol=1e-6)  # a flat map stays flat
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        smooth_map(fused, -1)
    with pytest.raises(ValueError, match=r"\(H, W\) map"):
        smooth_map(np.zeros((2, 3, 4)), 0.5)


def test_the_extent_discount_lowers_a_wide_plateau_below_a_small_target():
    """A 20 x 20 bright roof outranks a 2 x 2 target of lower height; after the 13-pixel top-hat the target wins."""
    scores = np.zeros((40, 40), dtype=np.float32)
    scores[5:25, 5:25] = 5.0  # the roof
    scores[32:34, 30:32] = 3.0  # the target
    out = discount_extent(scores, 13, 0, 0.0)
    assert out[32:34, 30:32].min() == pytest.approx(3.0)  # a target narrower than the window keeps its height
    assert out[5:25, 5:25].max() < 3.0  # the roof falls to its rim and below
    np.testing.assert_array_equal(discount_extent(scores, 0, 0, 0.0), scores)
    with pytest.raises(ValueError, match="extent window"):
        discount_extent(scores, -1, 0, 0.0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        discount_extent(np.zeros((2, 3, 4)), 5, 0, 0.0)


@pytest.mark.parametrize("degrees", [0, 45, 90, 157.5])
def test_the_line_discount_lowers_a_long_thin_edge_below_a_small_target(degrees):
    """A 1-pixel-wide edge 30 pixels long (a shoreline) survives the square top-hat; the line openings take it down,
    in any of the 8 directions, while a 3 x 3 target keeps its height."""
    edge = np.zeros((41, 41), dtype=bool)
    for t in np.linspace(-15, 15, 200):
        angle = np.deg2rad(degrees)
        edge[int(round(20 - t * np.sin(angle))), int(round(20 + t * np.cos(angle)))] = True
    scores = np.where(edge, 4.0, 0.0).astype(np.float32)
    scores[2:5, 2:5] = 3.0  # the target, away from the edge
    square_only = discount_extent(scores, 13, 0, 0.0)
    assert square_only[edge].max() == pytest.approx(4.0)  # thin: the square opening does not reach it
    out = discount_extent(scores, 13, 17, 1.0)
    assert out[2:5, 2:5].min() == pytest.approx(3.0) and np.median(out[edge]) < 1.0
    footprint = line_footprint(17, degrees)
    assert 12 <= footprint.sum() <= 34 and footprint[8, 8]  # a thin line through the centre
