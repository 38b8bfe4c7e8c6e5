"""One PNG a user can look at: the scene, its gt, the fused map, each head's map and ROC curves.

    save_anomaly_figure("out/scene.png", cube, gt, fused, {"recon": r, "lm_nll": l}, "abu-urban-1")

Panels: a false-colour composite of three bands (percentile-stretched), the gt mask (when given), the
fused map (when given; the detected objects outlined on it when `detections` is given, NaN = no data drawn
blank) and one panel per entry of `head_maps`, each map with a colour bar (colours clipped
to the 1st..99.5th percentile of the map, the bar's arrows mark the clipping, the panel's label the full
range) and a readable title (`HEAD_TITLES`: `lm_nll` -> "masked-LM NLL"; other names are shown as given,
e.g. the benchmark's method labels). When a gt with both anomaly and background pixels is given, a last
row holds the ROC curves (logarithmic false-alarm axis) with each map's AUC in a legend beside them, never
over them. Inference and the benchmark's side-by-side maps share this one figure. Matplotlib runs on the
Agg backend (no display needed); `build_anomaly_figure` returns the matplotlib figure, `render_anomaly_figure`
the PNG's bytes, `save_anomaly_figure` writes them atomically (utils.atomic.write_files).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from anomaly.head_registry import HEADS  # noqa: E402
from data.blocks import read_block  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.errors import DataError  # noqa: E402
from utils.metrics import detection_metrics, roc_points  # noqa: E402

# Band centres (nm) for red, green and blue when wavelengths are known; else fractions of the band range.
_RGB_NM = (650.0, 550.0, 460.0)
_RGB_FRACTION = (0.55, 0.3, 0.1)
_MAX_COLUMNS = 4
_VMAX_PCT = 99.5  # score maps are heavy-tailed: colours span the 1st..99.5th percentile, or one pixel hides the rest
_PANEL_INCHES = 3.2
HEAD_TITLES = {"fused": "fused", **{name: head.title for name, head in HEADS.items()}}


def panel_title(name: str) -> str:
    """The human title of a head (or 'fused'); any other name (e.g. a benchmark method's label) as given."""
    return HEAD_TITLES.get(name, name)


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
    rgb = read_block(cube, (..., false_colour_bands(cube.shape[-1], wavelengths)), np.float64)  # (H, W, 3)
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
                        wavelengths: np.ndarray | None = None, detections: np.ndarray | None = None) -> Path:
    """Write the figure to `path` (PNG) and return the path; the arguments are `render_anomaly_figure`'s."""
    write_files({Path(path): render_anomaly_figure(cube, gt, fused, head_maps, title, wavelengths, detections)})
    return Path(path)


def render_anomaly_figure(cube: np.ndarray, gt: np.ndarray | None, fused: np.ndarray | None,
                          head_maps: dict[str, np.ndarray], title: str,
                          wavelengths: np.ndarray | None = None, detections: np.ndarray | None = None) -> bytes:
    """The figure as PNG bytes; the arguments are `build_anomaly_figure`'s."""
    fig = build_anomaly_figure(cube, gt, fused, head_maps, title, wavelengths, detections)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def build_anomaly_figure(cube: np.ndarray, gt: np.ndarray | None, fused: np.ndarray | None,
                         head_maps: dict[str, np.ndarray], title: str,
                         wavelengths: np.ndarray | None = None, detections: np.ndarray | None = None) -> plt.Figure:
    """The figure (the caller closes it).

    cube (H, W, B); gt (H, W) 0/1 or None; fused (H, W) or None (NaN = no data, drawn blank); head_maps
    {name: (H, W)}; detections (H, W) bool or None: the detected objects, outlined on the fused map's panel.
    """
    if getattr(cube, "ndim", None) != 3:
        raise DataError(f"expected a cube of shape (H, W, B), got shape {getattr(cube, 'shape', None)}")
    shape = tuple(cube.shape[:2])
    maps = {} if fused is None else {"fused": _check_map("fused", fused, shape)}
    for name, values in head_maps.items():
        maps[name] = _check_map(name, values, shape)
    if gt is not None:
        gt = _check_map("gt", gt, shape)
    if detections is not None:
        detections = _check_map("detections", detections, shape)
    with_roc = gt is not None and bool(maps) and 0 < int(np.count_nonzero(gt)) < gt.size  # else AUC is undefined
    count = 1 + int(gt is not None) + len(maps)
    cols = min(_MAX_COLUMNS, count)
    rows = -(-count // cols)
    fig = plt.figure(figsize=(_PANEL_INCHES * cols, _PANEL_INCHES * (rows + int(with_roc))), layout="constrained")
    grid = fig.add_gridspec(rows + int(with_roc), cols)
    panels = [fig.add_subplot(grid[i // cols, i % cols]) for i in range(count)]
    _show_image(panels[0], "false colour", false_colour(cube, wavelengths))
    if gt is not None:
        _show_gt(fig, panels[1], gt)
    for ax, (name, values) in zip(panels[1 + int(gt is not None):], maps.items()):
        _show_map(fig, ax, panel_title(name), values)
        if name == "fused" and detections is not None:
            _outline(ax, detections)
    if with_roc:
        _plot_roc(fig.add_subplot(grid[rows, : max(1, cols // 2)]), maps, gt)
    fig.suptitle(title, fontsize=11)
    return fig


def _bare(ax: plt.Axes, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _bar_axes(ax: plt.Axes) -> plt.Axes:
    """Axes for a colour bar hugging the right edge of `ax` (follows the image's drawn box, whatever its aspect)."""
    return ax.inset_axes([1.04, 0.0, 0.05, 1.0])


def _show_image(ax: plt.Axes, title: str, rgb: np.ndarray) -> None:
    ax.imshow(rgb, interpolation="nearest")
    _bare(ax, title)


def _show_gt(fig: plt.Figure, ax: plt.Axes, gt: np.ndarray) -> None:
    image = ax.imshow(gt, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _bare(ax, f"gt ({int(np.count_nonzero(gt))} anomaly pixels)")
    bar = fig.colorbar(image, cax=_bar_axes(ax), ticks=[0, 1])
    bar.ax.set_yticklabels(["background", "anomaly"], fontsize=7)


def _show_map(fig: plt.Figure, ax: plt.Axes, title: str, values: np.ndarray) -> None:
    """A score map (H, W) with its colour bar; colours clipped to the 1st..99.5th percentile."""
    if not np.isfinite(values).any():  # no data at all
        values = np.zeros(values.shape)
    low, high = np.nanpercentile(values, 1), np.nanpercentile(values, _VMAX_PCT)
    image = ax.imshow(values, cmap="inferno", vmin=low, vmax=high, interpolation="nearest")
    _bare(ax, title)
    lowest, highest = float(np.nanmin(values)), float(np.nanmax(values))
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (lowest < low, highest > high)]
    bar = fig.colorbar(image, cax=_bar_axes(ax), extend=extend)
    bar.ax.tick_params(labelsize=7)
    ax.set_xlabel(f"range {lowest:.3g} .. {highest:.3g}", fontsize=7)


def _outline(ax: plt.Axes, detections: np.ndarray) -> None:
    """The detected objects' outlines (cyan) over a map panel, their count in the title."""
    mask = np.asarray(detections, dtype=bool)
    count = 0
    if mask.any():  # padded by a background pixel: objects at the border close, and a 1 x N map contours too
        h, w = mask.shape
        limits = ax.get_xlim(), ax.get_ylim()
        ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), np.pad(mask, 1).astype(np.float32), levels=[0.5],
                   colors="cyan", linewidths=0.8)
        ax.set_xlim(limits[0])
        ax.set_ylim(limits[1])
        count = ndimage.label(mask, structure=np.ones((3, 3), bool))[1]
    ax.set_title(f"{ax.get_title()} ({count} detected, outlined)", fontsize=9)


def _plot_roc(ax: plt.Axes, maps: dict[str, np.ndarray], gt: np.ndarray) -> None:
    """ROC curves, Pd against log Pf; Pf = 0 is drawn at 1 / (number of background pixels). The legend
    (each map's AUC) sits to the right of the axes, outside the curves."""
    floor = 1.0 / max(1, int(np.count_nonzero(gt == 0)))
    for name, values in maps.items():
        pf, pd = roc_points(values, gt)
        auc = detection_metrics(values, gt)["auc"]
        ax.plot(np.maximum(pf, floor), pd, label=f"{panel_title(name)}  {auc:.4f}", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false-alarm rate Pf (log)", fontsize=8)
    ax.set_ylabel("detection rate Pd", fontsize=8)
    ax.set_title("ROC curves", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0, title="ROC AUC",
              title_fontsize=7)
