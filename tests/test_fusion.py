"""Per-scene normalisation before fusion (anomaly/fusion.py): rank puts every head on one bounded scale."""

import torch

from anomaly.fusion import fuse_scores, normalize_scores


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
