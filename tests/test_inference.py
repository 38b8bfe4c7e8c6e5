"""Stage 3 scripts on tiny checkpoints: outputs, refusals, checkpoint chain, band-count changes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly.inference import run_inference
from anomaly.run_folders import OUTPUT_FILES
from anomaly.train_anomaly import CKPT_NAME, train_anomaly_detector
from data.io import load_scene
from data.preprocess import SpectralPreprocessor, mean_spectrum
from encoder.hsi_bert_encoder import HSIEncoderBERT
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from utils.checkpoint import load_checkpoint, parent_record, save_checkpoint
from utils.config import to_dict
from utils.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parent.parent
TINY_BERT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_stage3_ckpts(tmp_path_factory.mktemp("ckpts"))


def make_stage3_ckpts(root: Path) -> Path:
    """Untrained tokenizer (12 bands, 6x6 patches; codebooks initialised) and encoder checkpoints in `root`,
    chained by sha256."""
    torch.manual_seed(0)
    cfg = TokenizerConfig(num_bands=12, patch_size=6, stride=3, K_s=8, K_x=8, hidden_dim=8, num_layers=2,
                          band_stride=1, pooled_length=4, encoder_channels=[8])
    tok = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())
    tok.eval().tokenize(torch.rand(32, 12, 6, 6))  # initialise the codebooks (k-means on first use), as training does
    save_checkpoint(root / "tok.pth", "tokenizer", to_dict(cfg), tok.state_dict())
    enc = HSIEncoderBERT(64, 2, "none", False, 0.35, 36, grid_size=6, bert_config=TINY_BERT, spectral_codebook_size=8,
                         spectral_input_dim=12, guard_radius=tok.spatial_vqvae.guard_radius)
    spectra = {"a": np.linspace(0.2, 0.8, 12).tolist(), "b": np.linspace(0.8, 0.2, 12).tolist()}  # (B,) each
    save_checkpoint(root / "enc.pth", "encoder", {"encoder_args": enc.encoder_args()}, enc.state_dict(),
                    parent=parent_record(root / "tok.pth"), domains={"a": 0, "b": 1}, domain_spectra=spectra)
    # an encoder checkpoint from before `domain_id: auto`: no domain_spectra
    save_checkpoint(root / "enc_old.pth", "encoder", {"encoder_args": enc.encoder_args()}, enc.state_dict(),
                    parent=parent_record(root / "tok.pth"), domains={"a": 0, "b": 1})
    return root


def scene_file(path, seed=0, size=(17, 19), bands=30):
    """A smooth background with a 2x2 target; `bands` differs from the tokenizer's 12 (docs/design.md "Band resampling")."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = np.sin(np.linspace(0, 3, bands))[None, None] + 0.3 * rng.random((h, w, 1))
    cube = (base + 0.02 * rng.standard_normal((h, w, bands))).astype(np.float32)
    gt = np.zeros((h, w), np.uint8)
    gt[5:7, 8:10] = 1
    cube[gt == 1] = np.cos(np.linspace(0, 3, bands))
    np.savez(path, cube=cube, gt=gt)
    return str(path)


def sets(tmp, **extra):
    base = {"output_dir": tmp / "det", "anomaly_epochs": 1, "anomaly_batch_size": 32, "local_rx.inner": 3, "local_rx.outer": 5,
            "head_weights.one_class": 1, "head_weights.lm_nll": 1, "head_weights.recon": 1,
            "head_weights.rarity": 1, "head_weights.ctx_lrx": 1, "lm_block": 2}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_train_then_infer_writes_every_output(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    ckpt = train_anomaly_detector(None, sets(tmp_path), encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)
    stored = load_checkpoint(ckpt, "anomaly")
    assert stored["parent"]["path"] == str(ckpts / "enc.pth") and len(stored["parent"]["sha256"]) == 64
    assert not any(k.startswith("universal_model.") and "lora_" not in k for k in stored["state_dict"])
    out = run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "out"))
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    anomaly_map = np.load(out / "anomaly_map.npy")
    assert anomaly_map.shape == (17, 19) and anomaly_map.dtype == np.float32 and np.isfinite(anomaly_map).all()
    heads = np.load(out / "head_maps.npz")
    assert set(heads.files) == {"lm_nll", "ctx_spec", "ctx_rx", "ctx_lrx", "recon", "one_class", "rarity", "grx", "lrx"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "unsupervised" and 0 <= metrics["fused"]["auc"] <= 1
    assert set(metrics["heads"]) == set(heads.files)
    assert set(metrics["fused"]) == {"auc", "ap", "auc_pf_tau", "auc_pd_tau"}
    assert metrics["checkpoints"]["encoder"]["sha256"] == stored["parent"]["sha256"]

    assert metrics["inference_stride"] == 6  # default 0 = the patch size
    # domain_id: auto (the default): "scene" is no pre-training scene, so the nearest mean prepared spectrum
    tok_cfg = load_checkpoint(ckpts / "tok.pth", "tokenizer")["config"]
    prep = SpectralPreprocessor.fit(load_scene(scene).cube, tok_cfg["num_bands"], tok_cfg["normalize"])
    spectrum = mean_spectrum(load_scene(scene).cube, prep.transform)  # (12,)
    stored_spectra = load_checkpoint(ckpts / "enc.pth", "encoder")["domain_spectra"]
    cosine = {name: float(spectrum @ np.asarray(v)) / np.linalg.norm(spectrum) / np.linalg.norm(v)
              for name, v in stored_spectra.items()}
    nearest = max(cosine, key=cosine.get)
    assert metrics["domain"] == {"domain_id": {"a": 0, "b": 1}[nearest], "scene": nearest,
                                 "reason": "nearest mean spectrum", "similarity": pytest.approx(cosine[nearest])}
    assert metrics["domain_id"] == metrics["domain"]["domain_id"] and stored["config"]["domain"] == metrics["domain"]

    with pytest.raises(ConfigError, match="--overwrite"):  # an earlier run's files are never replaced silently
        run_inference(None, ckpt, data_path=scene, out_dir=str(out))
    run_inference(None, ckpt, data_path=scene, out_dir=str(out), overwrite=True)


def test_each_scene_gets_its_own_detector_and_inference_finds_it(ckpts, tmp_path, monkeypatch):
    """output_dir left empty: checkpoints/anomaly/<scene name>/, so training on b keeps a's detector, and inference
    without a detector path scores each scene with its own; an output_dir given (the spec's path) is used exactly."""
    monkeypatch.chdir(tmp_path)  # the default folders are relative to the current directory
    light = ["anomaly_epochs=1", "local_rx.inner=3", "local_rx.outer=5", "device=cpu"]  # default heads: nothing trains
    for name, seed in (("a", 0), ("b", 1)):
        ckpt = train_anomaly_detector(None, light, encoder_ckpt=str(ckpts / "enc.pth"),
                                      data_path=scene_file(f"{name}.npz", seed))
        assert ckpt == Path("checkpoints/anomaly") / name / CKPT_NAME
    for name, config in (("a", None), ("b", str(ROOT / "configs/anomaly.yaml"))):  # with and without a run config
        assert load_checkpoint(Path("checkpoints/anomaly") / name / CKPT_NAME, "anomaly")["config"]["train_scene"] == name
        out = run_inference(config, data_path=f"{name}.npz", out_dir=f"out_{name}", overrides=light)
        assert json.loads((out / "metrics.json").read_text())["checkpoints"]["detector"]["path"] == \
            str(Path("checkpoints/anomaly") / name / CKPT_NAME)
    with pytest.raises(CheckpointError, match="no detector for scene 'c' at checkpoints/anomaly/c/anomaly_detector.pth"):
        run_inference(None, data_path=scene_file("c.npz"), out_dir="out_c")
    spec = train_anomaly_detector(None, light + ["output_dir=checkpoints/anomaly"], encoder_ckpt=str(ckpts / "enc.pth"),
                                  data_path="a.npz")
    assert spec == Path("checkpoints/anomaly") / CKPT_NAME


def test_inference_stride_changes_the_patch_heads_only(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    ckpt = train_anomaly_detector(None, sets(tmp_path), encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)
    maps = {}
    for stride in (3, 6):
        out = run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / f"s{stride}"),
                            overrides=[f"inference_stride={stride}"])
        assert json.loads((out / "metrics.json").read_text())["inference_stride"] == stride
        maps[stride] = np.load(out / "head_maps.npz")
    for head in ("grx", "lrx", "lm_nll", "ctx_spec"):  # whole-scene and blind-spot heads do not use the patch step
        np.testing.assert_array_equal(maps[3][head], maps[6][head])
    for head in ("recon", "one_class"):  # 4 overlapping patches per pixel vs 1
        assert not np.allclose(maps[3][head], maps[6][head])
    with pytest.raises(ConfigError, match="inference_stride 7 is larger than the patch size 6"):
        run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "s7"), overrides=["inference_stride=7"])
    assert not (tmp_path / "s7").exists()


def test_a_lora_fit_round_trips_through_the_checkpoint_and_changes_the_context_heads(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    frozen = train_anomaly_detector(None, sets(tmp_path, output_dir=tmp_path / "frozen"),
                                    encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)
    ckpt = train_anomaly_detector(None, sets(tmp_path, use_lora="true", adapt_steps=5, **{"lora.r": 2}),
                                  encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)
    stored = load_checkpoint(ckpt, "anomaly")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in stored["state_dict"].items())  # fitted, not zero
    assert len(stored["metrics"]["adapt_losses"]) == 5
    out = run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "out"))
    base = run_inference(None, frozen, data_path=scene, out_dir=str(tmp_path / "base"))
    fitted, plain = np.load(out / "head_maps.npz"), np.load(base / "head_maps.npz")
    assert np.isfinite(fitted["lm_nll"]).all() and not np.array_equal(fitted["lm_nll"], plain["lm_nll"])
    np.testing.assert_array_equal(fitted["grx"], plain["grx"])  # the fit moves only the encoder's heads
    with pytest.raises(ConfigError, match="use_lora: true needs adapt_steps > 0"):
        train_anomaly_detector(None, sets(tmp_path, use_lora="true", output_dir=tmp_path / "bad"),
                               encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)


def test_supervised_training_on_the_scored_scene_is_refused(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    copy = tmp_path / "copy.npz"
    copy.write_bytes(Path(scene).read_bytes())  # same cube under another name
    for labelled in (scene, str(copy)):
        with pytest.raises(ConfigError, match="never train the detector"):
            train_anomaly_detector(None, sets(tmp_path, supervised="true", supervised_data_path=labelled),
                                   encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)


@pytest.mark.parametrize("subset", [0, 9])
def test_supervised_training_on_another_scene(ckpts, tmp_path, subset):
    scored = scene_file(tmp_path / "scored.npz", seed=0)
    labelled = scene_file(tmp_path / "labelled.npz", seed=1)
    ckpt = train_anomaly_detector(None, sets(tmp_path, supervised="true", supervised_data_path=labelled,
                                             max_train_patches=subset),
                                  encoder_ckpt=str(ckpts / "enc.pth"), data_path=scored)
    out = run_inference(None, ckpt, data_path=scored, out_dir=str(tmp_path / "out"))
    assert json.loads((out / "metrics.json").read_text())["mode"] == "supervised"
    with pytest.raises(Exception, match="metrics would be meaningless"):
        run_inference(None, ckpt, data_path=labelled, out_dir=str(tmp_path / "out2"))


def test_a_replaced_encoder_checkpoint_is_an_error_naming_both(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    enc = tmp_path / "enc.pth"
    enc.write_bytes((ckpts / "enc.pth").read_bytes())
    ckpt = train_anomaly_detector(None, sets(tmp_path), encoder_ckpt=str(enc), data_path=scene)
    enc_ckpt = torch.load(enc, weights_only=True)
    enc_ckpt["metrics"] = {"changed": 1.0}
    torch.save(enc_ckpt, enc)
    with pytest.raises(CheckpointError, match=f"{ckpt}.*{enc}"):
        run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "out"))


def test_cli_refuses_supervised_training_on_the_scored_scene(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    proc = subprocess.run([sys.executable, "-m", "anomaly.train_anomaly", "--config", "configs/anomaly.yaml",
                           "--encoder_ckpt", str(ckpts / "enc.pth"), "--data_path", scene,
                           "--set", "supervised=true", "--set", f"supervised_data_path={scene}",
                           "--set", "head_weights.one_class=1",
                           "--set", f"output_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "never train the detector" in proc.stderr and "Traceback" not in proc.stderr


def test_training_subset_keeps_ids_and_gt_of_the_same_patches():
    from types import SimpleNamespace

    from anomaly.config import AnomalyConfig
    from anomaly.train_anomaly import _training_tokens
    from data.scene import Scene

    rows, cols = np.meshgrid(np.arange(12), np.arange(14), indexing="ij")
    cube = np.stack([rows * 100 + cols, rows, cols], axis=-1).astype(np.float32)  # (12, 14, 3)
    gt = ((rows + cols) % 5 == 0).astype(np.uint8)
    # the stand-in tokenizer names each patch by its centre pixel's code row * 100 + col
    detector = SimpleNamespace(tokenize=lambda p: p[:, 0, 2:3, 2].long())  # (n, 1)
    ids, gt_patches = _training_tokens(AnomalyConfig(max_train_patches=7, inference_batch_size=3),
                                       detector, Scene("s", cube, gt), SimpleNamespace(transform=None),
                                       4, 2, True, torch.device("cpu"))
    assert ids.shape == (7, 1) and gt_patches.shape == (7, 4, 4)
    assert len(set(ids[:, 0].tolist())) == 7  # 7 different patches
    for code, patch in zip(ids[:, 0].tolist(), gt_patches):
        r, c = divmod(code, 100)  # pixel (2, 2) of this patch is image pixel (r, c)
        assert patch[2, 2] == gt[r, c]


def test_explicit_domain_id_wins_and_is_recorded(ckpts, tmp_path):
    scene = scene_file(tmp_path / "scene.npz")
    ckpt = train_anomaly_detector(None, sets(tmp_path, domain_id=1, anomaly_epochs=0),
                                  encoder_ckpt=str(ckpts / "enc_old.pth"), data_path=scene)
    out = run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / "out"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["domain"] == {"domain_id": 1, "scene": "b", "reason": "explicit domain_id", "similarity": None}


def test_auto_domain_with_an_old_encoder_checkpoint(ckpts, tmp_path):
    """No domain_spectra in the encoder checkpoint: auto by name works, else an error asks for domain_id."""
    scene = scene_file(tmp_path / "scene.npz")
    with pytest.raises(ConfigError, match="predates the mean spectra.*set an explicit domain_id"):
        train_anomaly_detector(None, sets(tmp_path), encoder_ckpt=str(ckpts / "enc_old.pth"), data_path=scene)
    named = scene_file(tmp_path / "b.npz")  # scene name "b": a pre-training scene's name
    ckpt = train_anomaly_detector(None, sets(tmp_path, anomaly_epochs=0), encoder_ckpt=str(ckpts / "enc_old.pth"),
                                  data_path=named)
    assert load_checkpoint(ckpt, "anomaly")["config"]["domain"] == {
        "domain_id": 1, "scene": "b", "reason": "scene name", "similarity": None}



def test_bhw_scene_with_a_gt_file_and_paths_relative_to_the_current_directory(ckpts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with np.load(scene_file(tmp_path / "scene.npz")) as arrays:
        cube, gt = arrays["cube"], arrays["gt"]  # (17, 19, 30), (17, 19)
    np.save("bhw.npy", np.ascontiguousarray(cube.transpose(2, 0, 1)))  # (30, 17, 19), no evidence of its layout
    Image.fromarray(gt * 255).save("mask.png")
    layout = ["cube_layout=bhw", "gt_path=mask.png"]
    ckpt = train_anomaly_detector(None, sets(Path(".")) + layout, encoder_ckpt=str(ckpts / "enc.pth"),
                                  data_path="bhw.npy")
    out = run_inference(None, ckpt, data_path=str(tmp_path / "bhw.npy"), out_dir="out", overrides=layout)
    assert np.load(out / "anomaly_map.npy").shape == (17, 19)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shape"] == [17, 19, 30] and "fused" in metrics  # the PNG's gt was read for the metrics
    assert (metrics["data_path"], metrics["gt_path"], metrics["cube_layout"]) == ("bhw.npy", "mask.png", "bhw")
    paths = {name: record["path"] for name, record in metrics["checkpoints"].items()}
    assert paths == {"detector": str(Path("det") / CKPT_NAME), "encoder": str(ckpts / "enc.pth"),
                     "tokenizer": str(ckpts / "tok.pth")}  # under the current directory: relative; else absolute


def test_one_class_training_embeds_each_patch_once_and_the_recomputing_path_agrees(ckpts, tmp_path, monkeypatch):
    """Without LoRA the frozen encoder's embeddings are cached for every epoch (in eval mode, as scoring sees them);
    a scene too large for the cache recomputes them per batch, also in eval mode, and trains to the same head."""
    import anomaly.train_anomaly as stage3

    scene = scene_file(tmp_path / "scene.npz")
    calls = []
    original = stage3.objective.embeddings
    monkeypatch.setattr(stage3.objective, "embeddings",
                        lambda detector, ids, d: calls.append(len(ids)) or original(detector, ids, d))
    states = []
    for budget, name in ((512 << 20, "cached"), (0, "recomputed")):
        monkeypatch.setattr(stage3, "EMBEDDING_CACHE_BYTES", budget)
        calls.clear()
        ckpt = train_anomaly_detector(None, sets(tmp_path, anomaly_epochs=3, output_dir=tmp_path / name),
                                      encoder_ckpt=str(ckpts / "enc.pth"), data_path=scene)
        states.append((load_checkpoint(ckpt, "anomaly")["state_dict"], sum(calls)))
    (cached, cached_calls), (recomputed, recomputed_calls) = states
    patches = cached_calls  # the cache embeds each training patch once
    assert recomputed_calls == 4 * patches  # the centre, then 3 epochs
    for key in cached:
        torch.testing.assert_close(cached[key], recomputed[key])


def test_an_encoder_without_spectra_sees_the_ids_whatever_context_ids_says(ckpts, tmp_path):
    """Without ids the blind-spot context is the cells' spectra; an ids-only encoder has nothing else to read, so it
    scores the same map with context_ids false (the default) and true."""
    enc = HSIEncoderBERT(64, 2, "none", False, 0.35, 36, grid_size=6, bert_config=TINY_BERT, spectral_codebook_size=8,
                         guard_radius=2)
    save_checkpoint(tmp_path / "ids_only.pth", "encoder", {"encoder_args": enc.encoder_args()}, enc.state_dict(),
                    parent=parent_record(ckpts / "tok.pth"), domains={"a": 0, "b": 1})
    scene = scene_file(tmp_path / "scene.npz")
    heads = ["head_weights.ctx_spec=0", "head_weights.ctx_rx=0", "head_weights.lm_nll=1", "domain_id=0",
             f"output_dir={tmp_path / 'det'}", "anomaly_epochs=1", "local_rx.inner=3", "local_rx.outer=5"]
    ckpt = train_anomaly_detector(None, heads, encoder_ckpt=str(tmp_path / "ids_only.pth"), data_path=scene)
    maps = [np.load(run_inference(None, ckpt, data_path=scene, out_dir=str(tmp_path / f"out_{ids}"),
                                  overrides=[f"context_ids={ids}"]) / "head_maps.npz")["lm_nll"] for ids in ("false", "true")]
    assert np.isfinite(maps[0]).all() and maps[0].std() > 0
    np.testing.assert_array_equal(maps[0], maps[1])
