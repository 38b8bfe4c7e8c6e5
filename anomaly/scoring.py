"""Scoring a whole scene with a detector: stream the scene, run every head, normalise and fuse.

    scores = score_scene(detector, cube, domain_id, batch_size=256, transform=prep.transform)
    scores.anomaly_map          # (H, W) float32, the fused map
    scores.head_maps["ctx_rx"]  # (H, W) float32, one head's raw map

The one scoring loop of the project: `HSIAnomalyDetector.score_scene` / `generate_anomaly_map`, Stage 3
inference, the benchmark and the speed case all call it. The scene is never held prepared whole:
- patch heads (recon, one_class, rarity) stream tokenizer patches `stride` pixels apart, batch by batch,
  and average overlapping patches per pixel;
- context heads score every pixel while hidden in a blind spot (anomaly/blind_spot.py);
- grx / lrx read the prepared cube in row chunks and keep its (H, W, d) principal components.
Each head's (H, W) map is then normalised over the scene, the maps are fused with the head weights and the fused
map is smoothed with a Gaussian of `fused_smoothing` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from anomaly.accumulate import ScoreAccumulator
from anomaly.baselines import local_rx_components, mahalanobis, principal_axes, scene_stats, truncated_precision
from anomaly.blind_spot import CONTEXT_HEADS, blind_spot_maps
from anomaly.config import AnomalyConfig
from anomaly.fusion import fuse_scores, normalize_scores, smooth_map
from anomaly.heads import code_log_frequencies
from data.blocks import read_block
from data.datasets import HSIPatchExtractor
from utils.errors import DataError

PATCH_HEADS = ("recon", "one_class", "rarity")  # scored patch by patch, on the tokenizer grid
SCENE_HEADS = ("grx", "lrx")  # scored on the whole prepared cube


@dataclass
class SceneScores:
    """Output of `score_scene`: all maps (H, W) float32 numpy arrays.

    anomaly_map: the fused map (smoothed); head_maps: each computed head's raw map; normalized: the same maps
    after the per-scene normalisation that the fusion used.
    """

    anomaly_map: np.ndarray
    head_maps: dict[str, np.ndarray]
    normalized: dict[str, np.ndarray]


class PreparedRows:
    """Read-only view of a cube (H, W, B_raw) as its prepared version (H, W, num_bands): slicing rows
    applies `transform` to those rows only, so a memory-mapped scene is never prepared whole."""

    def __init__(self, cube: np.ndarray, transform: Callable | None, num_bands: int):
        self.cube, self.transform = cube, transform
        self.shape = (*cube.shape[:2], num_bands)
        self.ndim = 3

    def __getitem__(self, rows: slice) -> np.ndarray:
        chunk = read_block(self.cube, rows)
        return chunk if self.transform is None else self.transform(chunk)  # (r, W, num_bands)


def _patch_batches(detector, cube: np.ndarray, batch_size: int, transform: Callable | None, stride: int):
    """(patches (n, B, S, S) on the detector's device, corners (n, 2)) over the scene, `stride` apart."""
    device = detector.code_log_freq.device
    extractor = HSIPatchExtractor(detector.patch_size, stride)
    for patches, coords in extractor.iter_batches(cube, batch_size, transform=transform):
        yield torch.from_numpy(patches).to(device), coords


def scene_code_counts(detector, cube: np.ndarray, batch_size: int, transform: Callable | None,
                      stride: int) -> torch.Tensor:
    """How often each spectral code occurs over all tokens of all patches of the scene: (K_s,) float64."""
    counts = torch.zeros(detector.universal_model.tokenizer.K_s, dtype=torch.float64)
    for patches, _ in _patch_batches(detector, cube, batch_size, transform, stride):
        codes = detector.spectral_codes(detector.tokenize(patches)).reshape(-1).cpu()  # (n*T,)
        counts += torch.bincount(codes, minlength=counts.numel()).double()
    return counts


def patch_head_maps(detector, cube: np.ndarray, domain_id: int, heads: list[str], batch_size: int,
                    transform: Callable | None, stride: int) -> dict[str, np.ndarray]:
    """{head: (H, W)} of the patch heads, overlapping patches averaged per pixel."""
    height, width = cube.shape[:2]
    table = None
    if "rarity" in heads:
        table = code_log_frequencies(scene_code_counts(detector, cube, batch_size, transform, stride))
    accumulators = {name: ScoreAccumulator(height, width) for name in heads}
    for patches, coords in _patch_batches(detector, cube, batch_size, transform, stride):
        domains = torch.full((patches.shape[0],), int(domain_id), dtype=torch.long, device=patches.device)  # (n,)
        for name, score in detector.head_scores(patches, domains, table, heads).items():
            accumulators[name].add(coords, score)
    return {name: acc.result() for name, acc in accumulators.items()}


def rx_head_maps(cube: np.ndarray, transform: Callable | None, num_bands: int, heads: list[str],
                 local_rx: dict[str, int], rx_components: int) -> dict[str, np.ndarray]:
    """grx / lrx maps (H, W) on the prepared cube, which is never held whole: row chunks are prepared
    (`transform`) once for the scene statistics and once more for the RX scores and the projection
    onto the leading principal components (H, W, d) that local RX works on. grx is RX on the leading
    `rx_components` principal components (0 = every band)."""
    height, width = cube.shape[:2]
    view = PreparedRows(cube, transform, num_bands)
    stats = scene_stats(view)
    rows = max(1, (1 << 22) // max(1, width * num_bands))  # 32 MiB of float64 per chunk
    d = min(int(local_rx["n_components"]), num_bands)
    axes = principal_axes(stats, d) if "lrx" in heads else None  # (B, d)
    precision = truncated_precision(stats.cov, rx_components) if "grx" in heads else None  # (B, B)
    maps = {"grx": np.empty((height, width), dtype=np.float32)} if precision is not None else {}
    z = np.empty((height, width, d), dtype=np.float32) if axes is not None else None  # (H, W, d)
    for r0 in range(0, height, rows):
        chunk = np.asarray(view[r0:r0 + rows], dtype=np.float64)  # (r, W, B)
        if precision is not None:
            maps["grx"][r0:r0 + rows] = mahalanobis(chunk, stats.mean, precision)
        if z is not None:
            z[r0:r0 + rows] = (chunk - stats.mean) @ axes
    if z is not None:
        windows = {k: v for k, v in local_rx.items() if k != "n_components"}
        maps["lrx"] = local_rx_components(z, **windows)
    return maps


@torch.no_grad()
def score_scene(detector, cube: np.ndarray, domain_id: int, batch_size: int = AnomalyConfig.inference_batch_size,
                transform: Callable[[np.ndarray], np.ndarray] | None = None,
                stride: int | None = None) -> SceneScores:
    """Score every pixel of a scene of any H x W with `detector` (an HSIAnomalyDetector; DESIGN 2, 7).

    cube: (H, W, num_bands) prepared, or the raw (H, W, B_raw) cube (ndarray or memmap) with `transform`
    mapping (..., B_raw) -> (..., num_bands) (e.g. SpectralPreprocessor.transform). `stride`: the patch step
    of the patch heads (default: the detector's). Memory is bounded by the batch plus one (H, W) map per
    head and, for lrx, the (H, W, d) principal components.
    """
    if getattr(cube, "ndim", None) != 3:
        raise DataError(f"expected a cube (H, W, B), got shape {getattr(cube, 'shape', None)}")
    if transform is None and cube.shape[2] != detector.num_bands:
        raise DataError(f"the cube has {cube.shape[2]} bands but the tokenizer expects {detector.num_bands}; "
                        f"prepare it (data.preprocess) or pass its transform")
    was_training = detector.training
    detector.train(False)
    active = detector.active_heads
    maps: dict[str, np.ndarray] = {}
    patch_heads = [h for h in active if h in PATCH_HEADS]
    if patch_heads:
        maps.update(patch_head_maps(detector, cube, domain_id, patch_heads, batch_size, transform,
                                    stride or detector.stride))
    context_heads = [h for h in active if h in CONTEXT_HEADS]
    if context_heads:
        model = detector.universal_model
        maps.update(blind_spot_maps(model.encoder, model.tokenizer, cube, transform, domain_id, context_heads,
                                    detector.lm_block, detector.score_offsets, batch_size,
                                    detector.code_log_freq.device, detector.local_rx_args, detector.rx_components))
    scene_heads = [h for h in active if h in SCENE_HEADS]
    if scene_heads:
        maps.update(rx_head_maps(cube, transform, detector.num_bands, scene_heads, detector.local_rx_args,
                                  detector.rx_components))
    detector.train(was_training)
    tensors = {name: torch.from_numpy(np.asarray(m, dtype=np.float32)) for name, m in maps.items()}
    fused = smooth_map(fuse_scores(tensors, detector.head_weights, detector.normalize).numpy(), detector.smoothing)
    normalized = {name: normalize_scores(t, detector.normalize).numpy() for name, t in tensors.items()}
    return SceneScores(anomaly_map=fused,
                       head_maps={name: np.asarray(m, dtype=np.float32) for name, m in maps.items()},
                       normalized=normalized)
