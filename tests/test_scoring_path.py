"""One scoring path: the spec API and inference.py give one map; a portable detector file; run settings at
inference are applied or refused, never dropped."""

import json
import logging
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from anomaly.detector import HSIAnomalyDetector
from anomaly.export_detector import export_detector
from anomaly.fusion import discount_extent
from anomaly.inference import run_inference
from anomaly.train_anomaly import train_anomaly_detector
from data.io import load_scene
from tests.test_inference import make_stage3_ckpts, scene_file, sets
from utils.checkpoint import load_checkpoint
from utils.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_stage3_ckpts(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="module")
def trained(ckpts, tmp_path_factory):
    """(detector checkpoint, scene path) with every cheap head on, patch heads at stride 3."""
    root = tmp_path_factory.mktemp("trained")
    scene = scene_file(root / "scene.npz")
    ckpt = train_anomaly_detector(None, sets(root, inference_stride=3), encoder_ckpt=str(ckpts / "enc.pth"),
                                  data_path=scene)
    return ckpt, scene


def test_spec_api_and_inference_give_the_same_map(trained, tmp_path):
    ckpt, scene_path = trained
    out = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "out"))
    metrics = json.loads((out / "metrics.json").read_text())
    detector, _ = HSIAnomalyDetector.from_checkpoint(ckpt)
    scene = load_scene(scene_path)  # the raw cube: the detector prepares it as the command line does
    api_map = detector.generate_anomaly_map(scene.cube, metrics["domain_id"])
    np.testing.assert_array_equal(api_map, np.load(out / "anomaly_map.npy"))
    scores = detector.score_scene(scene.cube, "auto", scene.wavelengths, scene.name)
    np.testing.assert_array_equal(scores.anomaly_map, api_map)
    assert scores.domain.domain_id == metrics["domain_id"] and scores.preprocessing == metrics["preprocessing"]
    assert metrics["inference_stride"] == detector.stride == 3


def test_an_exported_detector_scores_alone_in_another_folder(trained, tmp_path):
    ckpt, scene_path = trained
    reference = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "ref"))
    portable = export_detector(ckpt, tmp_path / "portable.pth")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        export_detector(ckpt, portable)
    with pytest.raises(CheckpointError, match="already self-contained"):
        export_detector(portable, tmp_path / "again.pth")
    # the copy alone, with the encoder and tokenizer files it was built from out of reach
    alone = tmp_path / "elsewhere" / "detector.pth"
    alone.parent.mkdir()
    shutil.copy(portable, alone)
    stored = load_checkpoint(ckpt, "anomaly")
    enc_path = stored["parent"]["path"]
    tok_path = load_checkpoint(enc_path, "encoder")["parent"]["path"]
    hidden = {p: p + ".away" for p in (enc_path, tok_path)}
    for p, away in hidden.items():
        shutil.move(p, away)
    try:
        with pytest.raises(CheckpointError, match="missing"):
            run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "plain"))
        out = run_inference(None, alone, data_path=scene_path, out_dir=str(tmp_path / "alone"))
    finally:
        for p, away in hidden.items():
            shutil.move(away, p)
    np.testing.assert_array_equal(np.load(out / "anomaly_map.npy"), np.load(reference / "anomaly_map.npy"))
    recorded = json.loads((out / "metrics.json").read_text())["checkpoints"]
    assert recorded["encoder"]["path"] == enc_path and recorded["tokenizer"]["path"] == tok_path


def test_a_damaged_embedded_parent_is_refused(trained, tmp_path):
    ckpt, scene_path = trained
    portable = export_detector(ckpt, tmp_path / "portable.pth")
    payload = torch.load(portable, weights_only=True)
    payload["embedded_parents"]["tokenizer"][-100:] ^= 1  # flip bits near the end of the tokenizer file
    torch.save(payload, portable)
    with pytest.raises(CheckpointError, match="embedded tokenizer checkpoint does not match the sha256"):
        run_inference(None, portable, data_path=scene_path, out_dir=str(tmp_path / "out"))


def test_changeable_run_settings_are_applied(trained, tmp_path):
    ckpt, scene_path = trained
    base = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "base"))
    changed = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "changed"),
                            overrides=["head_weights.recon=0.5", "head_weights.rarity=0", "local_rx.outer=7"])
    metrics = json.loads((changed / "metrics.json").read_text())
    assert metrics["head_weights"]["recon"] == 0.5 and "rarity" not in metrics["head_weights"]
    base_heads, new_heads = np.load(base / "head_maps.npz"), np.load(changed / "head_maps.npz")
    assert "rarity" not in new_heads.files
    assert not np.allclose(base_heads["lrx"], new_heads["lrx"])  # the wider window was used
    np.testing.assert_array_equal(base_heads["grx"], new_heads["grx"])
    assert not np.allclose(np.load(base / "anomaly_map.npy"), np.load(changed / "anomaly_map.npy"))


def test_fused_smoothing_is_a_run_setting_applied_after_the_fusion(trained, tmp_path):
    ckpt, scene_path = trained
    smoothed = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "smoothed"))
    plain = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "plain"),
                          overrides=["fused_smoothing=0"])
    assert json.loads((smoothed / "metrics.json").read_text())["fused_smoothing"] == 0.6
    assert json.loads((plain / "metrics.json").read_text())["fused_smoothing"] == 0
    for name in np.load(plain / "head_maps.npz").files:  # the heads are untouched
        np.testing.assert_array_equal(np.load(plain / "head_maps.npz")[name], np.load(smoothed / "head_maps.npz")[name])
    np.testing.assert_allclose(np.load(smoothed / "anomaly_map.npy"),
                               ndimage.gaussian_filter(np.load(plain / "anomaly_map.npy"), 0.6), rtol=1e-5, atol=1e-6)


def test_the_extent_discount_is_a_run_setting_between_fusion_and_smoothing(trained, tmp_path):
    ckpt, scene_path = trained
    default = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "default"))
    raw = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "raw"),
                        overrides=["extent_window=0", "line_weight=0", "fused_smoothing=0"])
    assert json.loads((default / "metrics.json").read_text())["extent_window"] == 13
    assert json.loads((raw / "metrics.json").read_text())["extent_window"] == 0
    fused = np.load(raw / "anomaly_map.npy")
    expected = ndimage.gaussian_filter(discount_extent(fused, 13, 17, 0.5), 0.6)
    np.testing.assert_allclose(np.load(default / "anomaly_map.npy"), expected, rtol=1e-5, atol=1e-6)


def test_one_class_can_be_switched_off_but_not_on(trained, ckpts, tmp_path):
    ckpt, scene_path = trained
    out = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "off"),
                        overrides=["head_weights.one_class=0"])
    assert "one_class" not in np.load(out / "head_maps.npz").files
    untrained = train_anomaly_detector(None, sets(tmp_path, **{"head_weights.one_class": 0}),
                                       encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene_path)
    with pytest.raises(ConfigError, match=r"--set head_weights.one_class=1.0: .* was trained with head_weights.one_class = 0.0"):
        run_inference(None, untrained, data_path=scene_path, out_dir=str(tmp_path / "on"),
                      overrides=["head_weights.one_class=1"])
    assert not (tmp_path / "on").exists()


@pytest.mark.parametrize("override", ["use_lora=true", "lora.r=4", "one_class.rep_dim=8", "adapt_steps=3"])
def test_settings_that_need_retraining_are_refused(trained, tmp_path, override):
    ckpt, scene_path = trained
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"--set {re.escape(key)}=.*: {re.escape(str(ckpt))} was trained with .*retraining"):
        run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "out"), overrides=[override])
    assert not (tmp_path / "out").exists()


def test_training_only_keys_do_not_matter_at_inference(trained, tmp_path):
    ckpt, scene_path = trained
    base = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "base"))
    other = run_inference(None, ckpt, data_path=scene_path, out_dir=str(tmp_path / "other"),
                          overrides=["anomaly_epochs=7", "learning_rate_anomaly=0.5", "max_train_patches=3"])
    np.testing.assert_array_equal(np.load(base / "anomaly_map.npy"), np.load(other / "anomaly_map.npy"))


def test_a_run_config_file_that_differs_is_named_not_applied(trained, tmp_path, caplog):
    ckpt, scene_path = trained
    config = load_checkpoint(ckpt, "anomaly")["config"]["anomaly"]
    trained_normalisation = config["normalize_scores"]
    config["head_weights"]["recon"] = 0.0  # the file was edited after training
    config["normalize_scores"] = "rank"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    logging.getLogger("anomaly").addHandler(caplog.handler)
    try:
        out = run_inference(str(path), ckpt, data_path=scene_path, out_dir=str(tmp_path / "out"))
    finally:
        logging.getLogger("anomaly").removeHandler(caplog.handler)
    assert "recon" in np.load(out / "head_maps.npz").files
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(path) in warning and "head_weights.recon 1.0 (file: 0.0)" in warning
    assert "--set head_weights.recon=0.0" in warning and "--set normalize_scores=\"rank\"" in warning
    assert trained_normalisation != "rank"
    assert json.loads((out / "metrics.json").read_text())["normalize_scores"] == trained_normalisation


def test_the_spec_call_gives_the_command_line_map_of_a_scene_with_wavelengths(ckpts, tmp_path):
    """A scene file with band centres: the command line resamples over them, and so does the spec's call given them."""
    path = scene_file(tmp_path / "plain.npz")
    with np.load(path) as npz:
        cube, gt = npz["cube"], npz["gt"]
    wavelengths = np.sort(np.random.default_rng(3).uniform(400, 2500, cube.shape[2])).astype(np.float32)
    np.savez(tmp_path / "scene.npz", cube=cube, gt=gt, wavelengths=wavelengths)
    ckpt = train_anomaly_detector(None, sets(tmp_path), encoder_ckpt=str(ckpts / "enc.pth"),
                                  data_path=str(tmp_path / "scene.npz"))
    out = run_inference(None, ckpt, data_path=str(tmp_path / "scene.npz"), out_dir=str(tmp_path / "out"))
    metrics = json.loads((out / "metrics.json").read_text())
    detector, _ = HSIAnomalyDetector.from_checkpoint(ckpt)
    api = detector.generate_anomaly_map(cube, metrics["domain_id"], wavelengths)
    np.testing.assert_array_equal(api, np.load(out / "anomaly_map.npy"))
    assert not np.array_equal(detector.generate_anomaly_map(cube, metrics["domain_id"]), api)  # over band index
