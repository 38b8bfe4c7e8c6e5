"""utils.metrics against hand-computed tiny cases."""

import numpy as np
import pytest

from utils.errors import DataError
from utils.metrics import detection_metrics, roc_points


def test_hand_computed_case():
    # scores 0, 1, 2, 3, 4 -> normalised 0, .25, .5, .75, 1; anomalies at 2 and 4.
    scores = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    gt = np.array([[0, 0, 1, 0, 1]], dtype=np.uint8)
    m = detection_metrics(scores, gt)
    # pairs (anomaly > background): 2 beats {0, 1}, 4 beats {0, 1, 3} -> 5 of 6
    assert m["auc"] == pytest.approx(5 / 6)
    # ranked: 4 (hit, p=1/1), 3 (miss), 2 (hit, p=2/3) -> AP = (1 + 2/3) / 2
    assert m["ap"] == pytest.approx((1 + 2 / 3) / 2)
    # integral of Pf(tau) = mean normalised background score = (0 + .25 + .75) / 3
    assert m["auc_pf_tau"] == pytest.approx(1 / 3)
    assert m["auc_pd_tau"] == pytest.approx((0.5 + 1.0) / 2)


def test_tau_areas_match_a_threshold_sweep():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 30))
    gt = (rng.random((20, 30)) < 0.1).astype(np.uint8)
    m = detection_metrics(scores, gt)
    norm = (scores - scores.min()) / (scores.max() - scores.min())
    taus = np.linspace(0, 1, 20001)
    pf = [(norm[gt == 0] > t).mean() for t in taus]
    pd = [(norm[gt == 1] > t).mean() for t in taus]
    assert m["auc_pf_tau"] == pytest.approx(np.trapezoid(pf, taus), abs=1e-3)
    assert m["auc_pd_tau"] == pytest.approx(np.trapezoid(pd, taus), abs=1e-3)


def test_invariant_to_affine_rescaling_and_perfect_detector():
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[1, 2] = 1
    scores = gt * 10.0 + 0.5
    m = detection_metrics(scores, gt)
    assert m["auc"] == 1.0 and m["ap"] == 1.0
    assert m["auc_pf_tau"] == 0.0 and m["auc_pd_tau"] == 1.0
    assert detection_metrics(3 * scores - 7, gt) == m


def test_roc_points():
    scores = np.array([[0.1, 0.4], [0.35, 0.8]])
    gt = np.array([[0, 0], [1, 1]])
    pf, pd = roc_points(scores, gt)
    assert pf[0] == 0 and pd[0] == 0 and pf[-1] == 1 and pd[-1] == 1
    assert np.all(np.diff(pf) >= 0) and np.all(np.diff(pd) >= 0)
    assert np.trapezoid(pd, pf) == pytest.approx(0.75)


def test_constant_scores_give_chance():
    gt = np.array([[0, 1], [0, 0]])
    m = detection_metrics(np.ones((2, 2)), gt)
    assert m["auc"] == 0.5 and m["auc_pf_tau"] == 0.0


@pytest.mark.parametrize("scores, gt, message", [
    (np.ones((3, 3)), np.zeros((3, 3)), "AUC is undefined: the gt mask has no anomaly pixels"),
    (np.ones((3, 3)), np.ones((3, 3)), "AUC is undefined"),
    (np.array([[np.nan, np.nan]]), np.array([[0, 1]]), "no data"),
    (np.array([[np.nan, 1.0, 2.0]]), np.array([[1, 0, 0]]), "no anomaly"),  # the NaN pixel is no data
    (np.array([[np.inf, 1.0]]), np.array([[0, 1]]), "non-finite"),
    (np.ones((3, 3)), np.zeros((3, 4)), "does not match"),
    (np.ones((1, 2)), np.array([[0, 2]]), "0/1"),
])
def test_errors(scores, gt, message):
    with pytest.raises(DataError, match=message):
        detection_metrics(scores, gt)
    with pytest.raises(DataError, match=message):
        roc_points(scores, gt)


def test_nan_pixels_are_left_out():
    scores = np.array([[0.1, 0.9, np.nan], [0.2, 0.8, np.nan]])
    gt = np.array([[0, 1, 1], [0, 1, 0]])
    assert detection_metrics(scores, gt) == detection_metrics(scores[:, :2], gt[:, :2])
    pf, pd = roc_points(scores, gt)
    np.testing.assert_array_equal(pf, roc_points(scores[:, :2], gt[:, :2])[0])
