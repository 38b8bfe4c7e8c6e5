"""Detection metrics for anomaly maps: ROC AUC, average precision and the 3-D ROC areas.

    m = detection_metrics(scores, gt)   # {"auc", "ap", "auc_pf_tau", "auc_pd_tau"}
    pf, pd = roc_points(scores, gt)     # the ROC curve, false-alarm rate vs detection rate

Pixels whose score is NaN hold no data (the scene marks them invalid) and are left out of every metric.
Scores are min-max normalised to [0, 1] first (a constant map becomes all zeros), so the areas over the
threshold tau are comparable between detectors. The 3-D ROC of Chang (used by the hyperspectral anomaly
detection papers) adds two areas over tau in [0, 1]:

- AUC(Pf, tau) = integral of Pf(tau) = P(score > tau | background): lower is better;
- AUC(Pd, tau) = integral of Pd(tau) = P(score > tau | anomaly): higher is better.

For scores in [0, 1], integral_0^1 P(s > tau) dtau = E[s], so both areas are computed exactly as the
mean normalised score over background pixels and over anomaly pixels (no threshold grid, no trapezoid
error). The gt mask is read only here, never by a detector (docs/design.md "Labels never in the score").
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from utils.errors import DataError


def _check(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten: normalised scores (P,) float64 in [0, 1], labels (P,) bool."""
    scores = np.asarray(scores)
    gt = np.asarray(gt)
    if scores.shape != gt.shape:
        raise DataError(f"score map shape {scores.shape} does not match gt mask shape {gt.shape}; "
                        f"score the same scene the gt belongs to")
    if scores.size == 0:
        raise DataError("score map is empty")
    flat = scores.astype(np.float64).ravel()  # (P,)
    labels = gt.ravel()  # (P,)
    scored = ~np.isnan(flat)  # NaN = no data (the scene's invalid pixels): left out
    if not scored.any():
        raise DataError("score map holds no data: every pixel is NaN (no data)")
    flat, labels = flat[scored], labels[scored]
    if not np.all(np.isfinite(flat)):
        bad = int(np.count_nonzero(~np.isfinite(flat)))
        raise DataError(f"score map holds {bad} non-finite values (inf); fix the detector or its input")
    if not np.all((labels == 0) | (labels == 1)):
        raise DataError(f"gt mask must hold only 0/1 values, found {np.unique(labels)[:5]}...")
    labels = labels.astype(bool)
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        kind = "no anomaly" if positives == 0 else "no background"
        raise DataError(f"AUC is undefined: the gt mask has {kind} pixels")
    low, high = flat.min(), flat.max()
    flat = (flat - low) / (high - low) if high > low else np.zeros_like(flat)
    return flat, labels


def detection_metrics(scores: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """ROC AUC, average precision, AUC(Pf, tau) and AUC(Pd, tau) of a score map against a 0/1 gt mask.

    scores: (H, W) any finite values, higher = more anomalous, NaN = no data (those pixels are left out);
    gt: (H, W) 0/1 (1 = anomaly). Raises DataError on a shape mismatch, infinite scores, an all-NaN map, a non-binary gt, or a gt with no
    anomaly (or no background) pixels, where AUC is undefined.
    """
    flat, labels = _check(scores, gt)
    return {
        "auc": float(roc_auc_score(labels, flat)),
        "ap": float(average_precision_score(labels, flat)),
        "auc_pf_tau": float(flat[~labels].mean()),
        "auc_pd_tau": float(flat[labels].mean()),
    }


def roc_points(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve: (pf (K,), pd (K,)) false-alarm and detection rates, from (0, 0) to (1, 1)."""
    flat, labels = _check(scores, gt)
    pf, pd, _ = roc_curve(labels, flat)
    return pf, pd
