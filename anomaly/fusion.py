"""Put each head's score map on one scale and fuse them (spec 6.2 step 3).

Normalisation is computed over the WHOLE scene's map, never per batch: a batch of patches that
happens to hold an anomaly would otherwise be rescaled away.

- `robust_z`: (x - median) / (1.4826 * MAD), the robust z-score (MAD = median absolute deviation;
  1.4826 makes it match the standard deviation for Gaussian data). Anomalies are rare, so median
  and MAD describe the background and are not pulled by the anomalies themselves. Where MAD is 0
  (over half the values tie, as in a code-rarity map where most pixels share a few codes), the
  standard deviation is the scale instead.
- `log_z`: sign(z) * log(1 + |z|) of the robust z-score: the same order and background scale near 0, but a
  heavy tail is compressed (z = 1000 counts about 2.3 times z = 20), so one head's extreme pixels cannot
  outweigh every other head's evidence, while its ranking still counts in full.
- `minmax`: (x - min) / (max - min), into [0, 1].
- `rank`: the share of the scene's pixels that score lower (ties share their mean rank), into [0, 1): every
  head gets the same bounded scale, so a heavy-tailed map cannot dominate the fusion and a head that fails
  on a scene moves a pixel by at most its weight's share.
A constant map carries no ranking: it normalises to zeros.

The fused (H, W) map is then judged against its spatial extent (`discount_extent`): its grey opening with an
`extent_window` square is subtracted (a white top-hat), so a response wider than the window in every direction (a
large bright roof, a field that the global heads find rare) falls to its rim while a target of a few pixels keeps
its height; then `line_weight` times its largest opening by a line of `line_length` pixels (8 directions) is
subtracted, so what is long and thin (a shoreline, a roof edge, a road) falls too. Last it is smoothed
(`smooth_map`): a Gaussian of `fused_smoothing` pixels pools each pixel's evidence with its neighbours', so an
object of a few pixels scores as a whole and a lone background pixel that one head finds odd is damped.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from scipy import ndimage

from anomaly.config import AnomalyConfig

MAD_TO_STD = 1.4826
_TINY = 1e-12


def normalize_scores(scores: torch.Tensor, method: str = "log_z", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise a score tensor of any shape over all its elements (over the `valid` ones, a bool tensor of the same
    shape, when given: the others come out 0, the background's level); returns float32, same shape."""
    if valid is not None:
        out = torch.zeros(scores.shape, dtype=torch.float32)
        out[valid] = normalize_scores(scores[valid], method)
        return out
    x = scores.detach().float()
    flat = x.reshape(-1)  # (n,)
    if method == "log_z":
        z = normalize_scores(x, "robust_z")
        return torch.sign(z) * torch.log1p(z.abs())
    if method == "robust_z":
        median = flat.median()
        mad = (flat - median).abs().median()
        scale = MAD_TO_STD * mad
        if scale <= _TINY:  # more than half the values equal: fall back to the standard deviation
            scale = flat.std(unbiased=False) if flat.numel() > 1 else flat.new_tensor(0.0)
        if scale <= _TINY:
            return torch.zeros_like(x)
        return (x - median) / scale
    if method == "rank":
        if flat.numel() < 2 or bool(flat.max() == flat.min()):
            return torch.zeros_like(x)
        values = flat.double()
        order = values.argsort()
        sorted_values = values[order]
        first = torch.searchsorted(sorted_values, sorted_values, right=False)  # (n,) first index of each tie group
        last = torch.searchsorted(sorted_values, sorted_values, right=True)  # (n,) one past its last index
        ranks = torch.empty_like(values)
        ranks[order] = (first + last - 1).double() / 2  # mean 0-based rank of the tie group
        return (ranks / flat.numel()).float().reshape(x.shape)
    if method == "minmax":
        lo, hi = flat.min(), flat.max()
        if hi - lo <= _TINY:
            return torch.zeros_like(x)
        return (x - lo) / (hi - lo)
    raise ValueError(f"unknown normalisation {method!r} (log_z, robust_z, minmax or rank)")


def fuse_scores(maps: Mapping[str, torch.Tensor], weights: Mapping[str, float],
                method: str = "log_z", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the normalised maps (normalised over `valid` elements when given), divided by the sum of the
    weights used.

    Every head in `maps` must have a weight > 0; a weighted head missing from `maps` is an error.
    """
    used = {name: float(w) for name, w in weights.items() if w > 0}
    missing = sorted(set(used) - set(maps))
    if missing:
        raise KeyError(f"no score map for weighted head(s) {missing}")
    extra = sorted(set(maps) - set(used))
    if extra:
        raise KeyError(f"score map(s) {extra} have no weight > 0")
    total = sum(used.values())
    fused = None
    for name, weight in used.items():
        part = normalize_scores(maps[name], method, valid) * (weight / total)
        fused = part if fused is None else fused + part
    return fused


def fuse_maps(maps: Mapping[str, np.ndarray], weights: Mapping[str, float], settings: AnomalyConfig,
              valid: np.ndarray | None = None) -> np.ndarray:
    """The detector's fused (H, W) float32 map: `fuse_scores` of the heads' (H, W) maps (`normalize_scores`), its
    extent discounted (`extent_window`), then smoothed (`fused_smoothing`). `valid` (H, W): the pixels that hold
    data; the others are normalised from no statistic, enter the filters at the background's level (0) and come out
    NaN."""
    tensors = {name: torch.from_numpy(np.asarray(m, dtype=np.float32)) for name, m in maps.items()}
    mask = None if valid is None else torch.from_numpy(np.asarray(valid, dtype=bool))
    fused = fuse_scores(tensors, weights, settings.normalize_scores, mask).numpy()
    discounted = discount_extent(fused, settings.extent_window, settings.line_length, settings.line_weight)
    out = smooth_map(discounted, settings.fused_smoothing)
    if valid is not None:
        out = np.where(valid, out, np.float32(np.nan))
    return out


LINE_ANGLES = 8  # directions of the line openings, 180 / 8 = 22.5 degrees apart


def line_footprint(length: int, degrees: float) -> np.ndarray:
    """(length, length) bool: the digital line of `length` pixels through the centre at `degrees` from the rows."""
    centre, angle = length // 2, np.deg2rad(degrees)
    footprint = np.zeros((length, length), dtype=bool)
    for r in np.linspace(-centre, centre, 4 * length):
        footprint[int(round(centre - r * np.sin(angle))), int(round(centre + r * np.cos(angle)))] = True
    return footprint


def discount_extent(scores: np.ndarray, window: int, line_length: int, line_weight: float) -> np.ndarray:
    """(H, W) float32: `scores` (H, W) minus its grey opening with a `window` x `window` square (edges mirrored), a
    white top-hat: what is high over a region wider than the window in every direction is lowered to its rim; then
    minus `line_weight` times the largest of its openings by lines of `line_length` pixels in LINE_ANGLES directions:
    what is high along a long thin structure is lowered too. 0 switches either step off."""
    if window < 0 or line_length < 0 or line_weight < 0:
        raise ValueError(f"extent window, line length and weight must be >= 0, got {window}, {line_length}, "
                         f"{line_weight}")
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {scores.shape}")
    if window > 0:
        scores = scores - ndimage.grey_opening(scores, size=(window, window), mode="reflect")
    if line_length > 0 and line_weight > 0:
        lines = [ndimage.grey_opening(scores, footprint=line_footprint(line_length, k * 180 / LINE_ANGLES),
                                      mode="reflect") for k in range(LINE_ANGLES)]
        scores = scores - np.float32(line_weight) * np.max(lines, axis=0)
    return scores


def smooth_map(scores: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) float32: `scores` (H, W) filtered with a Gaussian of `sigma` pixels (edges mirrored; truncated at
    4 sigma); sigma 0 returns the map unchanged."""
    if sigma < 0:
        raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {scores.shape}")
    return ndimage.gaussian_filter(scores, sigma, mode="reflect") if sigma > 0 else scores
