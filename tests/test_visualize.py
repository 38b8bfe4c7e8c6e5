"""anomaly.visualize: the PNG is written atomically, panels follow the inputs, bad shapes are errors."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from anomaly.visualize import false_colour, false_colour_bands, save_anomaly_figure
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
