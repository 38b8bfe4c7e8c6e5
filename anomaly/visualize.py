"""One PNG a user can look at: the scene, its gt, the fused map, each head's map and ROC curves.

    save_anomaly_figure("out/scene.png", cube, gt, fused, {"recon": r, "lm_nll": l}, "abu-urban-1")

Panels: a false-colour composite of three bands (percentile-stretched), the gt mask (when given), the
fused map (when given), one panel per entry of `head_maps` (colours clipped to the 1st..99.5th percentile
of each map), and, when a gt with both anomaly and background pixels is given, ROC curves with a
logarithmic false-alarm axis and each map's AUC in the legend. Matplotlib runs on the Agg backend (no
display needed); `render_anomaly_figure` returns the PNG's bytes, `save_anomaly_figure` writes them atomically
(utils.atomic.write_files).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.atomic import write_files  # noqa: E402
from utils.errors import DataError  # noqa: E402
from utils.metrics import detection_metrics, roc_points  # noqa: E402

# Band centres (nm) for red, green and blue when wavelengths are known; else fractions of the band range.
_RGB_NM = (650.0, 550.0, 460.0)
_RGB_FRACTION = (0.55, 0.3, 0.1)
_MAX_COLUMNS = 4
_VMAX_PCT = 99.5  # score maps are heavy-tailed: colours span the 1st..99.5th percentile, or one pixel hides the rest


def false_colour_bands(num_bands: int, wavelengths: np.ndarray | None = None) -> list[int]:
    """Indices of the three bands shown as red, green, blue."""
    if wavelengths is not None:
        wavelengths = np.asarray(wavelengths, dtype=np.float64)
        if wavelengths.shape != (num_bands,):
            raise DataError(f"wavelengths has shape {wavelengths.shape}, the cube has {num_bands} bands")
        return [int(np.argmin(np.abs(wavelengths - nm))) for nm in _RGB_NM]
    return [min(num_bands - 1, int(round(f * (num_bands - 1)))) for f in _RGB_FRACTION]


def false_colour(cube: np.ndarray, wavelengths: np.ndarray | None = None) -> np.ndarray:
    """(H, W, B) cube -> (H, W, 3) float image in [0, 1], each channel stretched between its 2nd and 98th
    percentiles. Reads only three bands, so a memmapped cube stays on disk."""
    rgb = np.asarray(cube[..., false_colour_bands(cube.shape[-1], wavelengths)], dtype=np.float64)  # (H, W, 3)
    low = np.nanpercentile(rgb, 2, axis=(0, 1))
    high = np.nanpercentile(rgb, 98, axis=(0, 1))
    return np.clip((rgb - low) / np.where(high > low, high - low, 1.0), 0.0, 1.0)


def _check_map(name: str, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != shape:
        raise DataError(f"map '{name}' has shape {values.shape}, the cube is {shape}")
    return values


def save_anomaly_figure(path: str | Path, cube: np.ndarray, gt: np.ndarray | None, fused: np.ndarray | None,
                        head_maps: dict[str, np.ndarray], title: str,
                        wavelengths: np.ndarray | None = None) -> Path:
    """Write the figure to `path` (PNG) and return the path; the arguments are `render_anomaly_figure`'s."""
    write_files({Path(path): render_anomaly_figure(cube, gt, fused, head_maps, title, wavelengths)})
    return Path(path)


def render_anomaly_figure(cube: np.ndarray, gt: np.ndarray | None, fused: np.ndarray | None,
                          head_maps: dict[str, np.ndarray], title: str,
                          wavelengths: np.ndarray | None = None) -> bytes:
    """The figure as PNG bytes.

    cube (H, W, B); gt (H, W) 0/1 or None; fused (H, W) or None; head_maps {name: (H, W)}.
    """
    if getattr(cube, "ndim", None) != 3:
        raise DataError(f"expected a cube of shape (H, W, B), got shape {getattr(cube, 'shape', None)}")
    shape = tuple(cube.shape[:2])
    maps = {} if fused is None else {"fused": _check_map("fused", fused, shape)}
    for name, values in head_maps.items():
        maps[name] = _check_map(name, values, shape)
    if gt is not None:
        gt = _check_map("gt", gt, shape)
    panels = [("false colour", false_colour(cube, wavelengths), None)]
    if gt is not None:
        panels.append(("gt", gt, "gray"))
    panels += [(name, values, "inferno") for name, values in maps.items()]
    with_roc = gt is not None and bool(maps) and 0 < int(np.count_nonzero(gt)) < gt.size  # else AUC is undefined
    count = len(panels) + int(with_roc)
    cols = min(_MAX_COLUMNS, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, (name, image, cmap) in zip(flat, panels):
        limits = {} if cmap != "inferno" else {"vmin": np.percentile(image, 1), "vmax": np.percentile(image, _VMAX_PCT)}
        ax.imshow(image, cmap=cmap, interpolation="nearest", **limits)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if with_roc:
        _plot_roc(flat[len(panels)], maps, gt)
    for ax in flat[count:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _plot_roc(ax: plt.Axes, maps: dict[str, np.ndarray], gt: np.ndarray) -> None:
    """ROC curves, Pd against log Pf; Pf = 0 is drawn at 1 / (number of background pixels)."""
    floor = 1.0 / max(1, int(np.count_nonzero(gt == 0)))
    for name, values in maps.items():
        pf, pd = roc_points(values, gt)
        auc = detection_metrics(values, gt)["auc"]
        ax.plot(np.maximum(pf, floor), pd, label=f"{name} {auc:.4f}", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false-alarm rate Pf (log)", fontsize=8)
    ax.set_ylabel("detection rate Pd", fontsize=8)
    ax.set_title("ROC (legend: AUC)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
