"""No-data pixels (a product's fill value, Scene.valid False) enter no statistic and get no score: whatever value a
product stored there, every other pixel's score is the same, and the maps hold NaN there."""

import numpy as np
import pytest
import torch

from anomaly.baselines import local_rx_components, scene_stats
from anomaly.detector import HSIAnomalyDetector
from anomaly.fusion import normalize_scores
from anomaly.inference import score_with_detector, trained_run_config
from anomaly.train_anomaly import train_anomaly_detector
from data.io import load_scene
from data.preprocess import SpectralPreprocessor
from tests.test_inference import make_stage3_ckpts, scene_file, sets
from utils.checkpoint import read_checkpoint
from utils.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(detector, raw cube (17, 19, 30), gt, no-data mask): every cheap head on, the default fusion."""
    root = tmp_path_factory.mktemp("nodata")
    ckpts = make_stage3_ckpts(root)
    path = scene_file(root / "scene.npz")
    ckpt = train_anomaly_detector(None, sets(root), encoder_ckpt=str(ckpts / "enc.pth"), data_path=path)
    detector, _ = HSIAnomalyDetector.from_checkpoint(ckpt)
    scene = load_scene(path)
    valid = np.ones(scene.cube.shape[:2], dtype=bool)
    valid[:, :4] = False  # a swath edge
    valid[12:15, 10:14] = False  # a gap
    return detector, np.asarray(scene.cube), scene.gt, valid, ckpt, path


def filled(cube, valid, value):
    out = cube.copy()
    out[~valid] = value
    return out


@pytest.mark.slow
def test_the_values_under_no_data_pixels_change_no_score(trained):
    detector, cube, _, valid, _, _ = trained
    maps = [detector.score_scene(filled(cube, valid, v), 0, valid=valid) for v in (-9999.0, 0.0, 1e6)]
    for other in maps[1:]:
        np.testing.assert_array_equal(other.anomaly_map, maps[0].anomaly_map)
        for name, m in maps[0].head_maps.items():
            np.testing.assert_array_equal(other.head_maps[name], m)
    assert np.isnan(maps[0].anomaly_map[~valid]).all() and np.isfinite(maps[0].anomaly_map[valid]).all()
    for m in (*maps[0].head_maps.values(), *maps[0].normalized.values()):
        assert np.isnan(m[~valid]).all() and np.isfinite(m[valid]).all()
    assert maps[0].preprocessing["nodata_pixels"] == int((~valid).sum())


@pytest.mark.slow
def test_an_all_valid_mask_is_the_scene_without_one_and_a_mostly_empty_scene_is_an_error(trained):
    detector, cube, _, valid, _, _ = trained
    plain = detector.score_scene(cube, 0)
    full = detector.score_scene(cube, 0, valid=np.ones_like(valid))
    np.testing.assert_array_equal(full.anomaly_map, plain.anomaly_map)
    sparse = np.zeros_like(valid)
    sparse[:2, :2] = True
    with pytest.raises(DataError, match=r"98\.8% of the pixels are no-data"):
        detector.score_scene(cube, 0, valid=sparse)
    with pytest.raises(DataError, match="no-data mask of shape"):
        detector.score_scene(cube, 0, valid=valid[:5])


@pytest.mark.slow
def test_the_command_line_path_scores_a_scene_with_no_data_and_measures_only_its_data(trained):
    detector, cube, gt, valid, ckpt, path = trained
    scene = load_scene(path)
    scene.cube, scene.valid = filled(cube, valid, -9999.0), valid
    run = trained_run_config(read_checkpoint(ckpt, "anomaly"), data_path=path)
    scored = score_with_detector(run, ckpt, scene)
    np.testing.assert_array_equal(scored.scores.anomaly_map, detector.score_scene(cube, 0, valid=valid).anomaly_map)
    assert scored.metrics["nodata_pixels"] == int((~valid).sum())
    assert 0 <= scored.metrics["fused"]["auc"] <= 1  # measured on the pixels with data only


def test_statistics_read_only_the_pixels_with_data():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((30, 27, 4))
    valid = np.ones((30, 27), dtype=bool)
    valid[5:12, 3:20] = False
    other = z.copy()
    other[~valid] = 1e3
    stats = scene_stats(z, valid=valid)
    np.testing.assert_allclose(stats.mean, z[valid].mean(axis=0))
    np.testing.assert_allclose(stats.cov, np.cov(z[valid].T))
    np.testing.assert_array_equal(local_rx_components(z, 3, 9, valid=valid)[valid],
                                  local_rx_components(other, 3, 9, valid=valid)[valid])
    np.testing.assert_array_equal(local_rx_components(z, 3, 9, valid=np.ones_like(valid)), local_rx_components(z, 3, 9))
    scores = torch.from_numpy(z[..., 0]).float()
    mask = torch.from_numpy(valid)
    normalised = normalize_scores(scores, "robust_z", mask)
    np.testing.assert_allclose(normalised[mask].numpy(), normalize_scores(scores[mask], "robust_z").numpy())
    assert (normalised[~mask] == 0).all()
    prep = SpectralPreprocessor.fit(filled(z, valid, np.nan), 4, "zscore", valid=valid)
    assert prep.info["repaired_values"] == 0 and prep.info["nodata_pixels"] == int((~valid).sum())
    np.testing.assert_allclose(prep.norm["mean"], z[valid].mean(axis=0), rtol=1e-6)


def test_local_rx_gives_no_evidence_where_a_background_has_no_spread():
    """A fill region of identical pixels (a product's no-data read as data) leaves local RX finite, not singular."""
    z = np.random.default_rng(1).standard_normal((20, 20, 3))
    z[:, :8] = 5.0  # identical pixels: their background windows have no covariance
    out = local_rx_components(z, 3, 5)
    assert np.isfinite(out).all() and (out[:, :5] == 0).all()


def test_pre_training_patches_hold_no_no_data_pixel(tmp_path):
    """Stage 1 reads a product whose border is its data ignore value: no patch touches the border, the
    preprocessing statistics skip it, and the patches do not depend on the fill value."""
    from data.datasets import HSIPatchExtractor
    from data.scenes import SceneEntry
    from sspq_tokenizer.config import TokenizerConfig
    from sspq_tokenizer.train_tokenizer import load_patches
    from tests.test_products import _write_envi
    from utils.logging import get_logger

    cube = np.random.default_rng(0).uniform(0.1, 1.0, (24, 24, 16)).astype(np.float32)
    patches = []
    for fill in (-9999.0, -1.0):
        holed = cube.copy()
        holed[:, :5] = fill  # a swath edge: every band holds the ignore value
        path = _write_envi(tmp_path / f"scene{int(fill)}.hdr", holed, **{"data ignore value": fill})
        cfg = TokenizerConfig(num_bands=8, patch_size=8, stride=4, max_patches_per_scene=None,
                              pretrain_datasets=[SceneEntry(name="edge", data_path=str(path), domain_id=0)])
        patches.append(load_patches(cfg, get_logger("test")).numpy())
    extractor = HSIPatchExtractor(8, 4)
    expected = len([c for c in extractor.coords(24, 24) if c[1] >= 5])  # patches clear of columns 0-4
    assert len(patches[0]) == expected and np.isfinite(patches[0]).all()
    np.testing.assert_array_equal(patches[0], patches[1])


@pytest.mark.slow
def test_stage3_trains_and_scores_a_scene_that_is_mostly_no_data(tmp_path):
    """60% of the scene is its data ignore value: the one-class head trains on clean patches only, the domain comes
    from the pixels with data, and the maps are NaN exactly there (before, more than half no-data dropped every band)."""
    from anomaly.inference import run_inference
    from tests.test_products import _write_envi

    ckpts = make_stage3_ckpts(tmp_path / "ckpts")
    cube = np.load(scene_file(tmp_path / "scene.npz"))["cube"] + 1.0  # (17, 19, 30), positive
    holed = cube.copy()
    holed[:, :11] = -9999.0
    path = _write_envi(tmp_path / "holed.hdr", holed, **{"data ignore value": -9999.0})
    ckpt = train_anomaly_detector(None, sets(tmp_path, anomaly_epochs=1), encoder_ckpt=str(ckpts / "enc.pth"),
                                  data_path=str(path))
    out = run_inference(None, ckpt, data_path=str(path), out_dir=str(tmp_path / "out"))
    fused = np.load(out / "anomaly_map.npy")
    assert np.isnan(fused[:, :11]).all() and np.isfinite(fused[:, 11:]).all()
