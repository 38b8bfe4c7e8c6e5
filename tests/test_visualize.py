"""anomaly.visualize: the PNG is written atomically, panels follow the inputs (colour bars, readable titles, the ROC
legend beside the curves), bad shapes are errors."""

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from anomaly.config import HEAD_NAMES
from anomaly.visualize import (HEAD_TITLES, build_anomaly_figure, false_colour, false_colour_bands, panel_title,
                               save_anomaly_figure)
from utils.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _inputs(h=16, w=20, b=10):
    rng = np.random.default_rng(0)
    cube = rng.random((h, w, b)).astype(np.float32)
    gt = np.zeros((h, w), dtype=np.uint8)
    gt[4:6, 7:9] = 1
    fused = rng.random((h, w)) + 2 * gt
    return cube, gt, fused, {"recon": rng.random((h, w)), "lm_nll": rng.random((h, w)) + gt}


@pytest.mark.parametrize("with_gt, with_fused", [(True, True), (False, True), (True, False)])
def test_writes_a_png_and_nothing_else(tmp_path, with_gt, with_fused):
    cube, gt, fused, heads = _inputs()
    out = save_anomaly_figure(tmp_path / "sub" / "fig.png", cube, gt if with_gt else None,
                              fused if with_fused else None, heads, "scene")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert mpimg.imread(out).shape[0] > 100
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]  # no temp file left behind


def test_more_panels_make_a_taller_figure(tmp_path):
    cube, gt, fused, heads = _inputs()
    small = mpimg.imread(save_anomaly_figure(tmp_path / "a.png", cube, gt, fused, {}, "t"))
    many = {f"h{i}": heads["recon"] for i in range(6)}
    large = mpimg.imread(save_anomaly_figure(tmp_path / "b.png", cube, gt, fused, many, "t"))
    assert large.shape[0] > small.shape[0]


def test_bad_shapes_are_data_errors(tmp_path):
    cube, gt, fused, heads = _inputs()
    with pytest.raises(DataError, match="recon"):
        save_anomaly_figure(tmp_path / "f.png", cube, gt, fused, {"recon": np.zeros((3, 3))}, "t")
    with pytest.raises(DataError, match="gt"):
        save_anomaly_figure(tmp_path / "f.png", cube, gt[:-1], fused, heads, "t")
    with pytest.raises(DataError, match="wavelengths"):
        save_anomaly_figure(tmp_path / "f.png", cube, gt, fused, heads, "t", wavelengths=np.arange(3.0))
    assert not (tmp_path / "f.png").exists()


def test_false_colour_band_choice_and_range():
    wl = np.linspace(400, 2500, 50)
    assert [round(wl[i]) for i in false_colour_bands(50, wl)] == [657, 529, 443]
    assert false_colour_bands(10) == [5, 3, 1]
    rgb = false_colour(_inputs()[0])
    assert rgb.shape == (16, 20, 3) and rgb.min() >= 0 and rgb.max() <= 1


def _drawn(cube, gt, fused, heads):
    fig = build_anomaly_figure(cube, gt, fused, heads, "scene")
    fig.canvas.draw()
    return fig


def test_every_map_has_a_colour_bar_and_a_readable_title():
    cube, gt, fused, heads = _inputs()
    heads["constant"] = np.ones(gt.shape)  # vmin == vmax must still draw
    fig = _drawn(cube, gt, fused, heads)
    try:
        images = {ax.get_title(): ax.images[0] for ax in fig.axes if ax.images}
        assert set(images) == {"false colour", "gt (4 anomaly pixels)", "fused", "reconstruction error",
                               "masked-LM NLL", "constant"}
        assert all(image.colorbar is not None for title, image in images.items() if title != "false colour")
        assert images["false colour"].colorbar is None
        fused_axes = next(ax for ax in fig.axes if ax.get_title() == "fused")
        assert fused_axes.get_xlabel() == f"range {fused.min():.3g} .. {fused.max():.3g}"
    finally:
        plt.close(fig)


def test_roc_legend_lies_outside_the_curves():
    cube, gt, fused, heads = _inputs()
    fig = _drawn(cube, gt, fused, heads)
    try:
        roc = next(ax for ax in fig.axes if ax.get_title() == "ROC curves")
        legend = roc.get_legend().get_window_extent()
        assert not legend.overlaps(roc.get_window_extent())
        labels = [text.get_text() for text in roc.get_legend().get_texts()]
        assert [label.split("  ")[0] for label in labels] == ["fused", "reconstruction error", "masked-LM NLL"]
    finally:
        plt.close(fig)


def test_titles_map_every_head_and_pass_other_names_through():
    assert {panel_title(name) for name in HEAD_NAMES} == set(HEAD_TITLES.values()) - {"fused"}
    assert panel_title("lrx") == "local RX" and panel_title("Isolation Forest") == "Isolation Forest"


def test_detections_are_outlined_on_the_fused_map_and_nan_is_no_data():
    cube, gt, fused, heads = _inputs()
    fused = fused.copy()
    fused[0, :3] = np.nan  # invalid pixels
    detections = np.zeros(gt.shape, bool)
    detections[4:6, 7:9] = True
    detections[10, 15] = True
    fig = build_anomaly_figure(cube, gt, fused, heads, "scene", detections=detections)
    try:
        fused_axes = next(ax for ax in fig.axes if ax.get_title().startswith("fused"))
        assert fused_axes.get_title() == "fused (2 detected, outlined)"
        assert len(fused_axes.collections) == 1  # the contour of the detection mask, and only on this panel
        assert not any(ax.collections for ax in fig.axes if ax is not fused_axes and ax.images)
        assert fused_axes.get_xlabel() == f"range {np.nanmin(fused):.3g} .. {np.nanmax(fused):.3g}"
    finally:
        plt.close(fig)
    with pytest.raises(DataError, match="detections"):
        build_anomaly_figure(cube, gt, fused, heads, "scene", detections=detections[:3])


@pytest.mark.parametrize("shape", [(1, 20), (20, 1)])
def test_a_strip_map_outlines_its_detections(shape):
    rng = np.random.default_rng(0)
    cube = rng.random((*shape, 5)).astype(np.float32)
    fused = rng.random(shape)
    detections = fused > 0.8
    detections.flat[0] = True  # at the border
    fig = build_anomaly_figure(cube, None, fused, {}, "strip", detections=detections)
    try:
        fused_axes = next(ax for ax in fig.axes if ax.get_title().startswith("fused"))
        assert len(fused_axes.collections) == 1
        h, w = shape
        assert fused_axes.get_xlim() == (-0.5, w - 0.5)  # the outline does not widen the panel
    finally:
        plt.close(fig)
