"""The released encoder (encoder/release.py, weights/): safetensors + config.json, read without unpickling, checked by
sha256, used by Stage 3 when the config's default encoder is absent, exported inside a portable detector."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import anomaly.run_folders as run_folders
from anomaly.checkpoint import load_universal_model
from anomaly.export_detector import export_detector
from anomaly.inference import run_inference
from anomaly.train_anomaly import train_anomaly_detector
from sspq_hsi import export_release
from encoder.release import read_release, write_release
from encoder.release_files import CONFIG_NAME, RELEASE_DIR, WEIGHT_FILES
from tests.test_inference import make_stage3_ckpts, scene_file, sets
from utils.checkpoint import load_checkpoint, sha256_file
from utils.errors import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SENSORS = {"a": "AVIRIS", "b": "HYDICE"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder with tok.pth / enc.pth, the release written from them)."""
    root = make_stage3_ckpts(tmp_path_factory.mktemp("ckpts"))
    write_release(root / "enc.pth", root / "release", SENSORS)
    return root, root / "release"


def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a release")
    monkeypatch.setattr(torch, "load", refuse)


def copy_release(release, folder):
    shutil.copytree(release, folder)
    return folder


def test_a_release_loads_the_same_models_without_unpickling(tiny, monkeypatch):
    root, release = tiny
    reference, ref_info = load_universal_model(root / "enc.pth", torch.device("cpu"))
    no_unpickling(monkeypatch)
    for path in (release, release / WEIGHT_FILES["encoder"]):
        model, info = load_universal_model(path, torch.device("cpu"))
        assert model.state_dict().keys() == reference.state_dict().keys()
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
        assert info["domains"] == ref_info["domains"] and info["domain_spectra"] == ref_info["domain_spectra"]
        assert info["tokenizer_config"] == {k: v for k, v in ref_info["tokenizer_config"].items() if k != "output_dir"}
        assert info["encoder"] == {"path": str((release / CONFIG_NAME).resolve()),
                                   "sha256": sha256_file(release / CONFIG_NAME)}
    config = json.loads((release / CONFIG_NAME).read_text())
    assert [(d["id"], d["name"], d["sensor"]) for d in config["domains"]] == [(0, "a", "AVIRIS"), (1, "b", "HYDICE")]
    assert config["sha256"] == {name: sha256_file(release / name) for name in WEIGHT_FILES.values()}
    assert "output_dir" not in config["tokenizer"]["config"] and "tokenizer_ckpt" not in config["encoder"]["config"]


def test_a_damaged_or_foreign_release_is_refused(tiny, tmp_path):
    root, release = tiny
    damaged = copy_release(release, tmp_path / "damaged")
    data = bytearray((damaged / "encoder.safetensors").read_bytes())
    data[-1] ^= 1
    (damaged / "encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="encoder.safetensors: sha256 .* differs"):
        read_release(damaged)
    (damaged / CONFIG_NAME).write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(CheckpointError, match="release format \\('other', 1\\)"):
        read_release(damaged)
    (damaged / CONFIG_NAME).write_text(json.dumps({"format": "sspq-hsi-release", "format_version": 1}))
    with pytest.raises(CheckpointError, match="the release config lacks 'sha256'"):
        read_release(damaged)
    with pytest.raises(CheckpointError, match="no sensor given for the pre-training scene\\(s\\) b"):
        write_release(root / "enc.pth", tmp_path / "r2", {"a": "AVIRIS"})
    with pytest.raises(CheckpointError, match="records no mean spectra"):
        write_release(root / "enc_old.pth", tmp_path / "r3", SENSORS)


def test_stage3_uses_the_release_when_the_default_encoder_is_absent(tiny, tmp_path, monkeypatch, caplog):
    root, release = tiny
    monkeypatch.setattr(run_folders, "RELEASE_DIR", release)
    monkeypatch.chdir(tmp_path)  # no checkpoints/encoder/universal_hsi_encoder.pth here
    scene = scene_file(tmp_path / "scene.npz")
    with caplog.at_level(logging.INFO, logger="sspq.anomaly"):
        ckpt = train_anomaly_detector(None, sets(tmp_path), data_path=scene)
    assert f"using the released encoder {release}" in caplog.text
    stored = load_checkpoint(ckpt, "anomaly")
    assert stored["parent"]["path"] == str((release / CONFIG_NAME).resolve())
    from_release = np.load(run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "out")) / "anomaly_map.npy")
    ckpt_pth = train_anomaly_detector(None, sets(tmp_path, output_dir=tmp_path / "det2"),
                                      encoder_ckpt=str(root / "enc.pth"), data_path=scene)
    from_pth = np.load(run_inference(None, ckpt_pth, data_path=scene, out_dir=str(tmp_path / "out2")) / "anomaly_map.npy")
    np.testing.assert_array_equal(from_release, from_pth)
    # the detector records the release's config.json, which pins the weights: an edited config.json is refused
    edited = copy_release(release, tmp_path / "edited")
    on_edited = train_anomaly_detector(None, sets(tmp_path, output_dir=tmp_path / "det5"), encoder_ckpt=str(edited),
                                       data_path=scene)
    config = json.loads((edited / CONFIG_NAME).read_text())
    config["tokenizer"]["config"]["normalize"] = "zscore"
    (edited / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"was built from .*{CONFIG_NAME} .* but .* has sha256"):
        run_inference(None, on_edited, data_path=scene, out_dir=str(tmp_path / "out5"))
    # any path but the default one is never replaced by the release
    with pytest.raises(CheckpointError, match="missing.pth: checkpoint not found"):
        train_anomaly_detector(None, sets(tmp_path, output_dir=tmp_path / "det3"), encoder_ckpt="missing.pth",
                               data_path=scene)
    monkeypatch.setattr(run_folders, "RELEASE_DIR", tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no encoder at .* and no released encoder"):
        train_anomaly_detector(None, sets(tmp_path, output_dir=tmp_path / "det4"), data_path=scene)


def test_a_detector_on_a_release_exports_with_the_release_inside(tiny, tmp_path):
    root, release = tiny
    moved = copy_release(release, tmp_path / "release")
    scene = scene_file(tmp_path / "scene.npz")
    ckpt = train_anomaly_detector(None, sets(tmp_path), encoder_ckpt=str(moved), data_path=scene)
    expected = np.load(run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "a")) / "anomaly_map.npy")
    portable = export_detector(ckpt, tmp_path / "portable.pth")
    for name in (*WEIGHT_FILES.values(), CONFIG_NAME):
        (moved / name).unlink()
    scored = np.load(run_inference(None, portable, data_path=scene, out_dir=str(tmp_path / "b")) / "anomaly_map.npy")
    np.testing.assert_array_equal(scored, expected)


def test_the_shipped_release_matches_its_hashes_and_loads_without_unpickling(monkeypatch):
    config = json.loads((RELEASE_DIR / CONFIG_NAME).read_text())
    for name in WEIGHT_FILES.values():
        assert sha256_file(RELEASE_DIR / name) == config["sha256"][name], f"weights/{name} differs from its sha256"
    total = sum(p.stat().st_size for p in RELEASE_DIR.iterdir())
    assert total < 20 * 2**20
    no_unpickling(monkeypatch)
    model, info = load_universal_model(RELEASE_DIR, torch.device("cpu"))
    num_bands = info["tokenizer_config"]["num_bands"]
    assert len(config["domains"]) == info["num_domains"] == 13
    assert all(d["sensor"] and len(d["mean_spectrum"]) == num_bands for d in config["domains"])
    assert (RELEASE_DIR / "MODEL_CARD.md").is_file()


@pytest.mark.skipif(not (SHARED / "had" / "hydice-urban.npz").is_file(), reason="needs ../shared/data")
def test_a_fresh_checkout_scores_a_real_scene_with_the_release(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here: the release is used
    scene = str(SHARED / "had" / "hydice-urban.npz")
    config = str(ROOT / "configs" / "anomaly.yaml")
    ckpt = train_anomaly_detector(config, [f"output_dir={tmp_path / 'det'}"], data_path=scene)
    out = run_inference(config, ckpt, data_path=scene, out_dir=str(tmp_path / "out"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoints"]["encoder"]["path"] == str((RELEASE_DIR / CONFIG_NAME).resolve())
    assert metrics["fused"]["auc"] > 0.98  # transductive seed 0 scores 0.99 (weights/MODEL_CARD.md)


def test_the_export_release_command(tiny, tmp_path, capsys):
    root, release = tiny
    argv = ["--encoder_ckpt", str(root / "enc.pth"), "--out", str(tmp_path / "r"), "--sensor", "*=AVIRIS",
            "--sensor", "b=HYDICE"]
    assert export_release.main(argv, "sspq-hsi export release") == 0
    config = json.loads((tmp_path / "r" / CONFIG_NAME).read_text())
    assert [d["sensor"] for d in config["domains"]] == ["AVIRIS", "HYDICE"]
    assert config["sha256"] == json.loads((release / CONFIG_NAME).read_text())["sha256"]  # the same bytes
    for bad, message in ((argv, "already holds a release; pass --overwrite"),
                         (argv[:3] + [str(tmp_path / "r2"), "--sensor", "a"], "--sensor 'a': expected SCENE=SENSOR")):
        with pytest.raises(SystemExit) as exit_info:
            export_release.main(bad, "sspq-hsi export release")
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
