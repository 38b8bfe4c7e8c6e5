"""Scoring a whole scene with a detector: stream the scene, run every head, normalise and fuse.

    scores = score_scene(detector, cube, domain_id, batch_size=256, transform=prep.transform, stride=8)
    scores.anomaly_map          # (H, W) float32, the fused map
    scores.head_maps["ctx_rx"]  # (H, W) float32, one head's raw map

The one scoring loop of the project: `HSIAnomalyDetector.score_scene` (which fits the scene's preprocessing and
chooses its domain first) calls it for the spec's call, Stage 3 inference, the benchmark and the speed case alike.
The scene is never held prepared whole:
- patch heads (recon, one_class, rarity) stream tokenizer patches `stride` pixels apart, batch by batch,
  and average overlapping patches per pixel;
- context heads score every pixel while hidden in a blind spot (anomaly/blind_spot.py);
- grx / lrx read the prepared cube in row chunks and keep its (H, W, d) principal components.
Each head's (H, W) map is then normalised over the scene, the maps are fused with the head weights and the fused
map's spatial extent is discounted and it is smoothed (anomaly/fusion.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from anomaly.accumulate import ScoreAccumulator
from anomaly.baselines import local_rx_components, scene_rx
from anomaly.blind_spot import blind_spot_maps
from anomaly.domain import DomainChoice
from anomaly.fusion import fuse_maps, normalize_scores
from anomaly.head_registry import CONTEXT_HEADS, PATCH_HEADS, SCENE_HEADS
from anomaly.heads import code_log_frequencies
from data.blocks import read_block
from data.datasets import HSIPatchExtractor
from utils.errors import DataError


@dataclass
class SceneScores:
    """Output of `score_scene`: all maps (H, W) float32 numpy arrays.

    anomaly_map: the fused map (smoothed); head_maps: each computed head's raw map; normalized: the same maps
    after the per-scene normalisation that the fusion used. `HSIAnomalyDetector.score_scene` adds the
    preprocessing it fitted (its `info`, None for a prepared cube) and the domain it chose.
    """

    anomaly_map: np.ndarray
    head_maps: dict[str, np.ndarray]
    normalized: dict[str, np.ndarray]
    preprocessing: dict | None = None
    domain: DomainChoice | None = None


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
    device = detector.device
    extractor = HSIPatchExtractor(detector.patch_size, stride)
    for patches, coords in extractor.iter_batches(cube, batch_size, transform=transform):
        yield torch.from_numpy(patches).to(device), coords


def scene_code_counts(detector, cube: np.ndarray, batch_size: int, transform: Callable | None,
                      stride: int, valid: np.ndarray | None = None) -> torch.Tensor:
    """How often each spectral code occurs over all tokens of all patches of the scene (the tokens whose cells hold
    only pixels with data, when a `valid` (H, W) mask is given): (K_s,) float64."""
    counts = torch.zeros(detector.universal_model.tokenizer.K_s, dtype=torch.float64)
    extractor = HSIPatchExtractor(detector.patch_size, stride)
    grid = detector.universal_model.tokenizer.grid_size
    for patches, coords in _patch_batches(detector, cube, batch_size, transform, stride):
        codes = detector.spectral_codes(detector.tokenize(patches)).reshape(-1).cpu()  # (n*T,)
        if valid is not None:  # a cell counts when every pixel of it holds data
            cells = extractor.gather(valid[..., None].astype(np.float32), coords)[..., 0]  # (n, S, S)
            pooled = -torch.nn.functional.adaptive_max_pool2d(-torch.from_numpy(cells)[:, None], grid)  # (n, 1, g, g)
            codes = codes[pooled.reshape(-1) > 0]
        counts += torch.bincount(codes, minlength=counts.numel()).double()
    return counts


def patch_head_maps(detector, cube: np.ndarray, domain_id: int, heads: list[str], batch_size: int,
                    transform: Callable | None, stride: int, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{head: (H, W)} of the patch heads, overlapping patches averaged per pixel; the rarity head's code frequencies
    count the pixels with data only (`valid`)."""
    height, width = cube.shape[:2]
    table = None
    if "rarity" in heads:
        table = code_log_frequencies(scene_code_counts(detector, cube, batch_size, transform, stride, valid))
    accumulators = {name: ScoreAccumulator(height, width) for name in heads}
    for patches, coords in _patch_batches(detector, cube, batch_size, transform, stride):
        domains = torch.full((patches.shape[0],), int(domain_id), dtype=torch.long, device=patches.device)  # (n,)
        for name, score in detector.head_scores(patches, domains, table, heads).items():
            accumulators[name].add(coords, score)
    return {name: acc.result() for name, acc in accumulators.items()}


def rx_head_maps(cube: np.ndarray, transform: Callable | None, num_bands: int, heads: list[str],
                 local_rx: dict[str, int], rx_components: int, valid: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """grx / lrx maps (H, W) on the prepared cube, which is never held whole (`PreparedRows`): one pass of scene
    statistics, one of scoring and projection (anomaly.baselines.scene_rx). grx is RX on the leading
    `rx_components` principal components (0 = every band); lrx is dual-window local RX on the leading
    `local_rx["n_components"]`. `valid` (H, W): the pixels the statistics and the local windows read."""
    out = scene_rx(PreparedRows(cube, transform, num_bands),
                   grx_components=rx_components if "grx" in heads else None,
                   lrx_components=min(int(local_rx["n_components"]), num_bands) if "lrx" in heads else None,
                   z_dtype=np.float32, valid=valid)
    if "z" in out:
        windows = {k: v for k, v in local_rx.items() if k != "n_components"}
        out["lrx"] = local_rx_components(out.pop("z"), **windows, valid=valid)
    return out


@torch.no_grad()
def score_scene(detector, cube: np.ndarray, domain_id: int, batch_size: int, transform: Callable | None,
                stride: int, valid: np.ndarray | None = None) -> SceneScores:
    """Score every pixel of a scene of any H x W with `detector` (an HSIAnomalyDetector).

    cube: (H, W, num_bands) prepared, or the raw (H, W, B_raw) cube (ndarray or memmap) with `transform`
    mapping (..., B_raw) -> (..., num_bands) (a fitted SpectralPreprocessor's). `stride`: the patch step of the
    patch heads. `valid` (H, W): the pixels that hold data (None = all): the others enter no statistic (RX and
    residual covariances, principal axes, local windows, normalisation) and are NaN in every map; their values
    must already read as one fixed spectrum (data.blocks.NoDataRows + the fitted preprocessing). Memory is bounded
    by the batch plus one (H, W) map per head and, for lrx and ctx_lrx, an (H, W, d) cube of principal components.
    """
    if getattr(cube, "ndim", None) != 3:
        raise DataError(f"expected a cube (H, W, B), got shape {getattr(cube, 'shape', None)}")
    if transform is None and cube.shape[2] != detector.num_bands:
        raise DataError(f"the cube has {cube.shape[2]} bands but the tokenizer expects {detector.num_bands}; "
                        f"prepare it (data.preprocess) or pass its transform")
    cfg = detector.config
    local_rx = {"inner": cfg.local_rx.inner, "outer": cfg.local_rx.outer, "n_components": cfg.local_rx.n_components}
    was_training = detector.training
    detector.train(False)
    active = detector.active_heads
    maps: dict[str, np.ndarray] = {}
    patch_heads = [h for h in active if h in PATCH_HEADS]
    if patch_heads:
        maps.update(patch_head_maps(detector, cube, domain_id, patch_heads, batch_size, transform, stride, valid))
    context_heads = [h for h in active if h in CONTEXT_HEADS]
    if context_heads:
        model = detector.universal_model
        maps.update(blind_spot_maps(model.encoder, model.tokenizer, cube, transform, domain_id, context_heads,
                                    cfg.lm_block, cfg.score_offsets, batch_size, detector.device, local_rx,
                                    cfg.rx_components, valid, layout=cfg.score_layout, context_ids=cfg.context_ids,
                                    refine_share=cfg.refine_share))
    scene_heads = [h for h in active if h in SCENE_HEADS]
    if scene_heads:
        maps.update(rx_head_maps(cube, transform, detector.num_bands, scene_heads, local_rx, cfg.rx_components, valid))
    detector.train(was_training)
    head_maps = {name: np.asarray(maps[name], dtype=np.float32) for name in active}
    fused = fuse_maps(head_maps, detector.head_weights, cfg, valid)
    mask = None if valid is None else torch.from_numpy(valid)
    normalized = {name: normalize_scores(torch.from_numpy(m), cfg.normalize_scores, mask).numpy()
                  for name, m in head_maps.items()}
    if valid is not None:  # no score at a pixel without data
        for m in (*head_maps.values(), *normalized.values()):
            m[~valid] = np.nan
    return SceneScores(anomaly_map=fused, head_maps=head_maps, normalized=normalized)
